"""Prompts in, completions out: tokenize with a template, sample in fixed-shape batches, decode.

Shared by GRPO training, rejection sampling and evaluation, so all three see the same prompts
and the same sampler.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import numpy as np

from r1jax import distributed
from r1jax.sampling import sampler as sampler_lib
from r1jax import templates
from r1jax import tokenizer as tok_lib


def prompt_text(question: str, template, tokenizer) -> str:
  """The prompt text as transformers builds it: a chat template is rendered with the tokenizer's
  special tokens as variables (`apply_chat_template`), a plain template filled in."""
  if isinstance(template, templates.Template) and template.chat_template is not None:
    return template.render(question, **tokenizer.special_tokens_map)
  return templates.format_prompt(question, template)


def encode_prompts(examples: Sequence[dict], tokenizer, template: str, max_prompt_len: int,
                   on_too_long: str = "skip") -> tuple[list[dict], list[list[int]], int]:
  """Template and tokenize each example's question.

  Prompts longer than `max_prompt_len` tokens are dropped ('skip', counted) or raise ('fail').
  Returns (kept examples, their token ids, number dropped).
  """
  if on_too_long not in ("skip", "fail"):
    raise ValueError(f"data.on_too_long={on_too_long!r} is not one of ('skip', 'fail')")
  texts = [prompt_text(ex["question"], template, tokenizer) for ex in examples]
  chat = isinstance(template, templates.Template) and template.chat_template is not None
  # A chat template writes any BOS itself, as special-token text (apply_chat_template(tokenize=True)).
  ids = [tokenizer.encode_rendered(t) for t in texts] if chat else tokenizer.encode_batch(texts)
  bos = [] if chat else tok_lib.bos_prefix(tokenizer)
  kept, kept_ids, dropped = [], [], 0
  for ex, p in zip(examples, ids):
    p = bos + list(p)
    if len(p) > max_prompt_len:
      if on_too_long == "fail":
        raise ValueError(f"example {ex.get('id', '?')!r}: prompt has {len(p)} tokens, more than "
                         f"sampling.max_prompt_len={max_prompt_len}")
      dropped += 1
      continue
    kept.append(ex)
    kept_ids.append(list(p))
  return kept, kept_ids, dropped


@dataclasses.dataclass
class Rollout:
  """Host (numpy) result of sampling n completions for each of B prompts; R = B * n rows."""
  prompt_tokens: np.ndarray  # B x P
  prompt_mask: np.ndarray  # B x P
  tokens: np.ndarray  # R x N
  logp: np.ndarray  # R x N
  mask: np.ndarray  # R x N
  length: np.ndarray  # R
  truncated: np.ndarray  # R
  texts: list[str]  # R decoded completions

  def train_batch(self, n: int) -> dict:
    """Prompt + completion rows (R x (P + N)) in the layout `train_step` expects."""
    pt = np.repeat(self.prompt_tokens, n, axis=0)
    pm = np.repeat(self.prompt_mask, n, axis=0)
    return {"tokens": np.concatenate([pt, self.tokens], 1), "mask": np.concatenate([pm, self.mask], 1),
            "completion_mask": self.mask, "old_logp": self.logp}

  def rows(self, n: int) -> dict:
    """Per-row fields (R rows each; prompts as one 1-D array per row, so rounds padded to
    different prompt buckets can be concatenated), e.g. for `grpo.dynamic_sampling.GroupBuffer`."""
    rep = lambda x: [row for row in x for _ in range(n)]
    return {"prompt_tokens": rep(self.prompt_tokens), "prompt_mask": rep(self.prompt_mask), "tokens": self.tokens,
            "logp": self.logp, "mask": self.mask, "length": self.length, "truncated": self.truncated,
            "texts": list(self.texts)}

  @classmethod
  def from_rows(cls, rows: dict, n: int, pad_id: int = 0) -> "Rollout":
    """Inverse of `rows` (extra fields ignored); prompts are left-padded to the longest."""
    pt, pm = rows["prompt_tokens"][::n], rows["prompt_mask"][::n]
    P = max(len(x) for x in pt)
    left = lambda x, v: np.concatenate([np.full(P - len(x), v, np.asarray(x).dtype), x])
    return cls(np.stack([left(x, pad_id) for x in pt]), np.stack([left(x, False) for x in pm]), rows["tokens"],
               rows["logp"], rows["mask"], rows["length"], rows["truncated"], list(rows["texts"]))


def sample(params, prompt_ids: Sequence[Sequence[int]], key, cfg, scfg: sampler_lib.SamplingConfig,
           tokenizer, batch_size: int | None = None, chunks: int = 1) -> Rollout:
  """Sample `scfg.num_samples` completions per prompt; the batch is padded to `batch_size` rows.

  chunks: generate the batch as this many sequential sub-batches of its prompts (the memory plan's
    `rollout_chunks`: a rollout too large for the device at once), padded to the whole batch's
    prompt bucket; each chunk draws with its rows' keys in the whole batch (`generate`'s
    row_offset), so the rows are those of one call. Chunks holding only padding are skipped.
  """
  toks, pmask = sampler_lib.pad_prompts(prompt_ids, scfg.prompt_buckets, scfg.pad_id, batch_size)
  if chunks < 1 or len(toks) % chunks:
    raise ValueError(f"rollout_chunks={chunks} must divide the batch of {len(toks)} prompts")
  b, n = len(toks) // chunks, scfg.num_samples
  outs = [sampler_lib.generate(params, toks[s:s + b], pmask[s:s + b], key, cfg, scfg, row_offset=s * n)
          for s in range(0, len(prompt_ids), b)]
  outs = [distributed.to_host(o) for o in outs]
  R = len(prompt_ids) * n
  out = {k: np.concatenate([o[k] for o in outs])[:R] for k in outs[0] if k != "steps"}
  texts = [tokenizer.decode([int(t) for t in row[m]]) for row, m in zip(out["tokens"], out["mask"])]
  return Rollout(toks[:len(prompt_ids)], pmask[:len(prompt_ids)], out["tokens"], out["logp"], out["mask"],
                 out["length"], out["truncated"], texts)
