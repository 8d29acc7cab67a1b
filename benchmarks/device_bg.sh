#!/usr/bin/env bash
# Longer device work than one 10-minute call: the first call starts COMMAND in its own process
# session (it outlives the call while the machine stays warm) and waits; later calls with the same
# LOG dir only wait. Each call returns after WAIT seconds or when the command is done, packing LOG
# into $OUT/logs.tgz (the device tool brings back few files).
#   WAIT=570 LOG=/tmp/job bash benchmarks/device_bg.sh COMMAND...
set -u
LOG=${LOG:-/tmp/job}; WAIT=${WAIT:-570}
mkdir -p "$LOG"
if [ ! -e "$LOG/started" ]; then
  date +%s >"$LOG/started"
  setsid nohup bash -c '"$@"; echo $? >"$0/rc"' "$LOG" "$@" >"$LOG/main.log" 2>&1 </dev/null &
fi
t0=$(date +%s)
while [ ! -e "$LOG/rc" ] && [ $(( $(date +%s) - t0 )) -lt "$WAIT" ]; do sleep 5; done
echo "elapsed since start: $(( $(date +%s) - $(cat "$LOG/started") )) s; rc: $(cat "$LOG/rc" 2>/dev/null || echo running)"
tail -n 25 "$LOG/main.log"
[ -n "${OUT:-}" ] && tar czf "$OUT/logs.tgz" -C "$(dirname "$LOG")" "$(basename "$LOG")" 2>/dev/null
exit 0
