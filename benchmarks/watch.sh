#!/usr/bin/env bash
# Run a command while sampling host memory (RSS of its process tree, free) and GPU memory every
# 5 s into $OUT/watch.tsv; the command's stdout/stderr go to $OUT/log.txt and $OUT/err.txt as they
# happen, so a kill or a call's time limit loses nothing already written.
#   OUT=/tmp/o bash benchmarks/watch.sh python experiments/r1_zero.py ...
OUT=${OUT:-.}
"$@" >"$OUT/log.txt" 2>"$OUT/err.txt" &
pid=$!
echo -e "t_s\trss_gib\thost_used_gib\tgpu_used_mib" >"$OUT/watch.tsv"
t0=$(date +%s)
while kill -0 $pid 2>/dev/null; do
  rss=$(ps -o rss= --ppid $pid -p $pid 2>/dev/null | awk '{s+=$1} END {printf "%.2f", s/1048576}')
  used=$(free -b | awk '/Mem:/ {printf "%.2f", $3/1073741824}')
  gpu=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1)
  echo -e "$(( $(date +%s) - t0 ))\t$rss\t$used\t$gpu" >>"$OUT/watch.tsv"
  sleep 5
done
wait $pid
rc=$?
echo "rc=$rc" >>"$OUT/log.txt"
exit $rc
