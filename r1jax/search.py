"""Tree search over a policy's continuations guided by a value model, and the sampling baselines it
is measured against at equal generated tokens (DeepSeek-R1 sec. 4.2: MCTS, an unsuccessful attempt).

The search is AlphaZero's MCTS (Silver et al. 2017) for one player with values in [0, 1], one
decision at a time: from the current root, `simulations` times descend by PUCT (or UCT) to a leaf,
evaluate the leaf with the value model, expand it with the policy and add the leaf's value to every
node on the path; then commit to the most visited child, keep its subtree, and search again from
there until the committed node is terminal. A root with a single child is committed without search.
The granularity is the environment's (TS-LLM, Feng et al. 2023, arXiv 2309.17179, compares the two):

  TokenEnv: a node is one token; its children are the policy's k most likely next tokens, with
    their probabilities renormalised over the k as priors.
  StepEnv: a node is one reasoning step ("12 plus 7 equals 19."); its children are k sampled
    continuations, each ending at its first token that holds a '.' (or EOS, or a cap); identical
    ones are merged, each with its share of the k as prior.

`TokenEnv` and `StepEnv` recompute each state's whole prefix; `CachedTokenEnv` and `CachedStepEnv`
continue decoding from the node's saved sampler state (`sampling_state`) instead.

Cost, per problem, counted as a KV-cached decoder spends it: a policy forward pass is one
next-token distribution (token level: one per expanded node; step level and sampling: one per
emitted token), a value forward pass one value of one state; tokens are every token the policy put
into the tree or into a sample, kept or not. Shape letters: B states, T padded length, V vocabulary.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from r1jax.model import heads
from r1jax.model import transformer as model_lib
from r1jax.model.config import ModelConfig
from r1jax.sampling import sampler as sampler_lib
from r1jax.sampling import sampling_state
from r1jax.evaluation import metrics

SELECTIONS = ("puct", "uct")


@dataclasses.dataclass
class Node:
  state: Any
  prior: float = 1.0
  terminal: bool = False
  visits: int = 0
  value_sum: float = 0.0
  value: float | None = None
  """The value model's estimate of this state, once evaluated (each state is evaluated once)."""
  children: list["Node"] = dataclasses.field(default_factory=list)

  @property
  def q(self) -> float | None:
    return self.value_sum / self.visits if self.visits else None


@dataclasses.dataclass
class Cost:
  policy_passes: int = 0
  value_passes: int = 0
  tokens: int = 0

  @property
  def forward_passes(self) -> int:
    return self.policy_passes + self.value_passes


@dataclasses.dataclass(frozen=True)
class Expansion:
  """An environment's children of one state: (state, prior, terminal) each, and what they cost."""
  children: list[tuple[Any, float, bool]]
  policy_passes: int
  tokens: int


class Env(Protocol):
  def expand(self, states: Sequence[Any]) -> list[Expansion]: ...
  def value(self, states: Sequence[Any]) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class Result:
  state: Any
  """The committed terminal state."""
  cost: Cost
  decisions: int


def select(node: Node, rule: str = "puct", c: float = 1.0) -> int:
  """The child to descend into (the first on ties).

  puct: argmax Q + c P sqrt(N) / (1 + n) (AlphaZero): N the node's visits, n and P the child's
    visits and prior, an unvisited child's Q the node's own mean value.
  uct: an unvisited child first (the highest prior), else argmax Q + c sqrt(ln N / n) (UCB1 on
    trees, Kocsis & Szepesvari 2006).
  """
  kids = node.children
  if rule == "uct":
    fresh = [i for i, ch in enumerate(kids) if ch.visits == 0]
    if fresh:
      return max(fresh, key=lambda i: kids[i].prior)
    scores = [ch.q + c * math.sqrt(math.log(node.visits) / ch.visits) for ch in kids]
  elif rule == "puct":
    fpu = node.q if node.visits else 0.0
    scores = [(ch.q if ch.visits else fpu) + c * ch.prior * math.sqrt(node.visits) / (1 + ch.visits) for ch in kids]
  else:
    raise ValueError(f"search selection={rule!r} is not one of {SELECTIONS}")
  return int(np.argmax(scores))


def descend(root: Node, rule: str = "puct", c: float = 1.0) -> list[Node]:
  """The path from `root` to the first node that is terminal or not yet expanded."""
  path = [root]
  while path[-1].children and not path[-1].terminal:
    path.append(path[-1].children[select(path[-1], rule, c)])
  return path


def backup(path: Sequence[Node], value: float) -> None:
  for node in path:
    node.visits += 1
    node.value_sum += value


def best_child(node: Node) -> Node:
  """The most visited child; ties to the higher mean value, then the higher prior, then the first."""
  return max(node.children, key=lambda ch: (ch.visits, ch.q if ch.visits else -math.inf, ch.prior))


def simulate(env: Env, roots: Sequence[Node], costs: Sequence[Cost], rule: str = "puct", c: float = 1.0) -> None:
  """One simulation in each tree, the trees' leaves evaluated and expanded in one batch each."""
  paths = [descend(r, rule, c) for r in roots]
  leaves = [p[-1] for p in paths]
  fresh = [i for i, leaf in enumerate(leaves) if leaf.value is None]
  if fresh:
    for i, v in zip(fresh, env.value([leaves[i].state for i in fresh])):
      leaves[i].value = float(v)
      costs[i].value_passes += 1
  grow = [i for i in fresh if not leaves[i].terminal]
  if grow:
    for i, e in zip(grow, env.expand([leaves[i].state for i in grow])):
      if not e.children:
        raise ValueError(f"the search environment gave no children for state {leaves[i].state!r}")
      leaves[i].children = [Node(s, p, t) for s, p, t in e.children]
      costs[i].policy_passes += e.policy_passes
      costs[i].tokens += e.tokens
  for path, leaf in zip(paths, leaves):
    backup(path, leaf.value)


def search(env: Env, states: Sequence[Any], simulations: int, rule: str = "puct", c: float = 1.0) -> list[Result]:
  """MCTS from each of `states` in lockstep (one batched environment call per simulation round)."""
  if simulations < 1:
    raise ValueError(f"search simulations={simulations} must be >= 1")
  roots = [Node(s) for s in states]
  costs = [Cost() for _ in states]
  decisions = [0] * len(states)
  while True:
    for i, r in enumerate(roots):  # a forced move costs no search
      while len(r.children) == 1 and not r.terminal:
        r = r.children[0]
        decisions[i] += 1
      roots[i] = r
    active = [i for i, r in enumerate(roots) if not r.terminal]
    if not active:
      return [Result(r.state, cost, d) for r, cost, d in zip(roots, costs, decisions)]
    for _ in range(simulations):
      simulate(env, [roots[i] for i in active], [costs[i] for i in active], rule, c)
    for i in active:
      roots[i] = best_child(roots[i])
      decisions[i] += 1


# ----------------------------------------------------------------------------- the two granularities


def step_boundaries(tokenizer) -> tuple[int, ...]:
  """Ids of the tokens that end a step: those whose text holds a '.', and EOS."""
  ids = [i for i in range(tokenizer.vocab_size) if "." in tokenizer.decode([i])]
  return tuple(sorted(set(ids) | {tokenizer.eos_id}))


@functools.partial(jax.jit, static_argnames=("cfg",))
def _last_values(params, head, tokens_BxT, mask_BxT, cfg):
  """sigmoid of the value head after each row's last token (rows left-padded): B."""
  return jax.nn.sigmoid(heads.values(params, head, tokens_BxT, mask_BxT, cfg)[:, -1])


@functools.partial(jax.jit, static_argnames=("cfg", "temperature"))
def _last_logp(params, tokens_BxT, mask_BxT, cfg, temperature):
  """Log-probabilities of each row's next token at `temperature` (rows left-padded): B x V."""
  h, _ = model_lib.hidden_states(params, tokens_BxT, model_lib.positions_from_mask(mask_BxT), cfg, mask_BxT=mask_BxT)
  return jax.nn.log_softmax(model_lib.logits_from_hidden(params, h[:, -1:], cfg)[:, 0] / temperature, axis=-1)


class _ModelEnv:
  """States are (problem index, completion token tuple); the prompt is prompts[index]. Batches are
  left-padded to a prompt bucket and to B = a power of two (few shapes, few compiles)."""

  def __init__(self, policy, value_model, cfg: ModelConfig, value_cfg: ModelConfig,
               prompts: Sequence[Sequence[int]], *, k: int, max_len: int, eos_ids: Sequence[int], pad_id: int,
               temperature: float = 1.0, buckets: Sequence[int] = (128, 192, 256, 384, 512, 1024)):
    if k < 1 or max_len < 1 or temperature <= 0:
      raise ValueError(f"search k={k} and max_len={max_len} must be >= 1 and temperature={temperature} > 0")
    self.policy, (self.value_params, self.head) = policy, value_model
    self.cfg, self.prompts, self.k, self.max_len = cfg, [list(p) for p in prompts], k, max_len
    self.eos, self.pad_id, self.temperature, self.buckets = set(eos_ids), pad_id, temperature, tuple(buckets)
    self.value_cfg = value_cfg

  def _batch(self, states):
    rows = [self.prompts[i] + list(comp) for i, comp in states]
    return sampler_lib.pad_prompts(rows, self.buckets, self.pad_id, 1 << (len(rows) - 1).bit_length())

  def terminal(self, comp: tuple) -> bool:
    return comp[-1] in self.eos or len(comp) >= self.max_len

  def value(self, states) -> np.ndarray:
    """sigmoid of the value head after each state's last token (B)."""
    toks, mask = self._batch(states)
    return np.asarray(_last_values(self.value_params, self.head, toks, mask, self.value_cfg))[:len(states)]


class TokenEnv(_ModelEnv):
  """A node is one token: children are the k most likely next tokens (one policy pass a node)."""

  def expand(self, states) -> list[Expansion]:
    logp_BxV = self._logp(states)
    out = []
    for (i, comp), lp in zip(states, logp_BxV):
      top = np.argsort(-lp, kind="stable")[:self.k]
      p = np.exp(lp[top] - lp[top].max())
      kids = [((i, comp + (int(t),)), float(q), self.terminal(comp + (int(t),))) for t, q in zip(top, p / p.sum())]
      out.append(Expansion(kids, policy_passes=1, tokens=len(kids)))
    return out

  def _logp(self, states) -> np.ndarray:
    """Log-probabilities of each state's next token at the temperature, the prefix recomputed: B x V."""
    toks, mask = self._batch(states)
    return np.asarray(_last_logp(self.policy, toks, mask, self.cfg, self.temperature), np.float64)[:len(states)]


class _SavedRows:
  """The saved sampler state (`sampling_state`) after each state's tokens, for environments that
  continue decoding from it instead of recomputing the prefix. A state is prefilled unless its
  parent (one token shorter) is saved, then continued by one decode step. Every saved row stays:
  device memory grows by one cache row (L x K x S x H, S = bucket + max_len) per saved state.
  prefilled / continued count the rows made each way."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.P = sampler_lib.bucket_for(max(map(len, self.prompts)) + self.max_len, self.buckets)
    self.saved, self.dparams, self.prefilled, self.continued = {}, None, 0, 0

  def _rows(self, states) -> sampling_state.SamplingState:
    """The saved state after each of `states`' tokens, made where missing."""
    todo = [s for s in dict.fromkeys(states) if s not in self.saved]
    grown = [s for s in todo if s[1] and (s[0], s[1][:-1]) in self.saved]
    fresh = [s for s in todo if s not in set(grown)]
    if fresh:
      toks, mask = sampler_lib.pad_prompts([self.prompts[i] + list(c) for i, c in fresh], (self.P,), self.pad_id,
                                           _pow2(len(fresh)))
      scfg = sampler_lib.SamplingConfig(pad_id=self.pad_id, prompt_buckets=())
      self.dparams, got = sampling_state.prefill(self.policy, toks, mask, self.cfg, scfg, self.max_len)
      self._keep(fresh, got)
      self.prefilled += len(fresh)
    if grown:
      parents = [self.saved[(i, c[:-1])] for i, c in grown]
      parents += parents[:1] * (_pow2(len(grown)) - len(grown))
      toks = np.asarray([c[-1] for _, c in grown] + [self.pad_id] * (len(parents) - len(grown)), np.int32)
      self._keep(grown, sampling_state.decode_step(self.dparams, sampling_state.concat(parents), toks, self.cfg))
      self.continued += len(grown)
    return sampling_state.concat([self.saved[s] for s in states])

  def _keep(self, states, got: sampling_state.SamplingState) -> None:
    for j, s in enumerate(states):
      self.saved[s] = got.rows(np.asarray([j]))


def _pow2(n: int) -> int:
  """Batches padded to a power of two: few shapes, few compiles."""
  return 1 << (n - 1).bit_length()


class CachedTokenEnv(_SavedRows, TokenEnv):
  """`TokenEnv` whose expansion continues from the saved state of the node's parent (one decode
  step of its last token over the parent's KV cache) instead of recomputing the whole prefix; a
  root is prefilled. The same children up to float rounding."""

  def _logp(self, states) -> np.ndarray:
    logits_RxV = self._rows(states).logits_RxV
    return np.asarray(jax.nn.log_softmax(logits_RxV / self.temperature, axis=-1), np.float64)


class StepEnv(_ModelEnv):
  """A node is one step: children are k sampled continuations, each up to its first boundary token
  (`step_boundaries`) or `step_tokens` tokens (one policy pass per sampled token)."""

  def __init__(self, *args, boundaries: Sequence[int], step_tokens: int, key, **kwargs):
    super().__init__(*args, **kwargs)
    if step_tokens < 1:
      raise ValueError(f"search step_tokens={step_tokens} must be >= 1")
    self.key, self._calls = key, 0
    self.scfg = sampler_lib.SamplingConfig(max_new_tokens=step_tokens, temperature=self.temperature,
                                           num_samples=self.k, eos_ids=tuple(sorted(set(boundaries) | self.eos)),
                                           pad_id=self.pad_id, prompt_buckets=())

  def expand(self, states) -> list[Expansion]:
    k = self.k
    self._calls += 1
    drawn = self._draw(states, jax.random.fold_in(self.key, self._calls))
    out = []
    for j, (i, comp) in enumerate(states):
      steps = drawn[j * k:(j + 1) * k]
      share = {s: steps.count(s) / k for s in dict.fromkeys(steps)}
      kids = [((i, comp + s), p, self.terminal(comp + s)) for s, p in share.items()]
      used = sum(map(len, steps))
      out.append(Expansion(kids, policy_passes=used, tokens=used))
    return out

  def _caps(self, states, B: int) -> np.ndarray:
    """Each of the B * k rows' cap on its step: step_tokens, or what max_len leaves (1 for padding)."""
    N = self.scfg.max_new_tokens
    return np.repeat([min(N, self.max_len - len(c)) for _, c in states] + [1] * (B - len(states)), self.k)

  def _draw(self, states, key) -> list[tuple[int, ...]]:
    """k sampled steps of each state, state-major (the prefix recomputed: `sampler.generate`)."""
    toks, mask = self._batch(states)
    got = sampler_lib.generate(self.policy, toks, mask, key, self.cfg, self.scfg, self._caps(states, len(toks)))
    tokens_RxN, length_R = np.asarray(got["tokens"]), np.asarray(got["length"])
    return [tuple(int(t) for t in tokens_RxN[r, :length_R[r]]) for r in range(len(states) * self.k)]


class CachedStepEnv(_SavedRows, StepEnv):
  """`StepEnv` whose k samples of a step continue from the node's saved state (its row repeated k
  times; `sampler.generate`'s draws: the key of row r's token t is fold_in(fold_in(key, r), t)) and
  whose children keep the state after their last token, instead of recomputing the prefix at every
  expansion; a root is prefilled. The same children up to float rounding of the logits drawn from."""

  def _draw(self, states, key) -> list[tuple[int, ...]]:
    B, k = _pow2(len(states)), self.k
    live = self._rows(list(states) + [states[0]] * (B - len(states)))  # padding rows: copies, cap 1
    st = live.rows(np.repeat(np.arange(B), k))
    cap_R, rows_R, stop = self._caps(states, B), jnp.arange(B * k), set(self.scfg.eos_ids)
    steps, ends = [[] for _ in range(B * k)], {}
    for t in range(self.scfg.max_new_tokens):
      tok_R, _ = sampler_lib._pick(st.logits_RxV, rows_R, jnp.full((B * k,), t), key, self.scfg)
      st = sampling_state.decode_step(self.dparams, st, tok_R, self.cfg)
      for r, tok in enumerate(np.asarray(tok_R).tolist()):
        if r not in ends:
          steps[r].append(tok)
          if tok in stop or len(steps[r]) >= cap_R[r]:
            ends[r] = st.rows(np.asarray([r]))
      if len(ends) == B * k:
        break
    for r in range(len(states) * k):
      i, comp = states[r // k]
      self.saved.setdefault((i, comp + tuple(steps[r])), ends[r])
    return [tuple(s) for s in steps[:len(states) * k]]


# ----------------------------------------------------------------------------- sampling at equal budget


def matched_count(lengths: Sequence[int], budget: float) -> int:
  """The n in 1..len(lengths) whose first n samples' total length is closest to `budget` tokens
  (the smaller n on a tie)."""
  if not len(lengths):
    raise ValueError("matched_count of no samples")
  return int(np.argmin(np.abs(np.cumsum(lengths) - budget))) + 1


def sampling_arms(lengths: Sequence[int], values: Sequence[float], answers: Sequence, correct: Sequence[float],
                  budget: float) -> dict:
  """Best-of-n (the sample the value model scores highest, the first on ties), majority vote over
  the samples' answers (`metrics.cons_at_k`) and oracle pass@n (any correct) over the first n samples
  of one problem, n = `matched_count(lengths, budget)`; their tokens and forward passes (one policy
  pass per token; best-of-n adds one value pass per sample)."""
  n = matched_count(lengths, budget)
  tokens = int(np.sum(lengths[:n]))
  return {"n": n, "tokens": tokens, "best_of_n": float(correct[int(np.argmax(values[:n]))]),
          "majority": metrics.cons_at_k(list(answers[:n]), list(correct[:n])),
          "pass_at_n": float(max(correct[:n])), "best_of_n_passes": tokens + n, "majority_passes": tokens}
