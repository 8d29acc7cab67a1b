"""Format rewards for the R1 template `<think> reasoning </think> <answer> answer </answer>`.

In R1-Zero the prompt ends with "Assistant:" and the completion starts with `<think>`. Some
templates end the prompt with `<think>` already; pass `think_in_prompt=True` for those, and the
completion is then judged as if that `<think>` preceded it (it must not open another one).
All rewards are in [0, 1].
"""
from __future__ import annotations

import re

_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_STRICT = re.compile(r"<think>\n?(.*?)\n?</think>\s*<answer>\n?(.*?)\n?</answer>", re.DOTALL)
_LENIENT = re.compile(r"<think>.*?</think>.*?<answer>.*?</answer>", re.DOTALL)


def _with_prompt_think(completion: str, think_in_prompt: bool) -> str | None:
  """The completion with the prompt's `<think>` put back; None if it opens a second one."""
  if not think_in_prompt:
    return completion
  if "<think>" in completion:
    return None
  return "<think>" + completion


def strict_format(completion: str, *, think_in_prompt: bool = False) -> float:
  """1.0 iff the whole completion is `<think>...</think> <answer>...</answer>`, each tag once.

  Whitespace around the whole completion is ignored (tokenizers put a space after "Assistant:"
  and a newline before EOS); between `</think>` and `<answer>` only whitespace is allowed.
  """
  text = _with_prompt_think(completion, think_in_prompt)
  if text is None or any(text.count(t) != 1 for t in _TAGS):
    return 0.0
  return 1.0 if _STRICT.fullmatch(text.strip()) else 0.0


def lenient_format(completion: str, *, think_in_prompt: bool = False) -> float:
  """1.0 iff `<think>`, `</think>`, `<answer>`, `</answer>` appear in this order somewhere."""
  text = _with_prompt_think(completion, think_in_prompt)
  return 1.0 if text is not None and _LENIENT.search(text) else 0.0


def tag_count(completion: str, *, think_in_prompt: bool = False) -> float:
  """open-r1's `tag_count_reward`: 0.25 for each of these substrings occurring exactly once:
  "<think>\\n", "\\n</think>\\n", "\\n<answer>\\n", "\\n</answer>".

  With `think_in_prompt` the first quarter is earned by NOT opening another `<think>`.
  """
  if think_in_prompt:
    first = completion.count("<think>") == 0
  else:
    first = completion.count("<think>\n") == 1
  rest = (completion.count(s) == 1 for s in ("\n</think>\n", "\n<answer>\n", "\n</answer>"))
  return 0.25 * (first + sum(rest))
