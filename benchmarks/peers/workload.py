"""The GRPO-step workload the peer scripts share with `benchmarks/grpo_step.py`: its arguments
and an in-memory word tokenizer (a prompt of n space-separated words is exactly n tokens)."""
from __future__ import annotations

import argparse


def workload_parser(description: str, presets) -> argparse.ArgumentParser:
  """Arguments every system takes (grpo_step.py passes them on); each script adds its own knobs."""
  ap = argparse.ArgumentParser(description=description)
  ap.add_argument("--preset", default="qwen2.5-0.5b", choices=sorted(presets))
  ap.add_argument("--prompts", type=int, default=16)
  ap.add_argument("--G", type=int, default=8)
  ap.add_argument("--prompt_len", type=int, default=256)
  ap.add_argument("--new_tokens", type=int, default=512)
  ap.add_argument("--steps", type=int, default=4, help="measured steps after the warm-up step(s)")
  ap.add_argument("--warmup", type=int, default=1)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--out", default="")
  return ap


def word_tokenizer(words: range, specials: dict[str, int], **kwargs):
  """WordLevel tokenizer: "t{i}" -> i for i in `words`, plus the special tokens at their ids
  ('<eos>', '<pad>', '<unk>'); kwargs go to `PreTrainedTokenizerFast`."""
  from tokenizers import Tokenizer, models, pre_tokenizers
  from transformers import PreTrainedTokenizerFast
  tok = Tokenizer(models.WordLevel(vocab={f"t{i}": i for i in words} | specials, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
                                 **kwargs)
