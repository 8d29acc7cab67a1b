"""The projections of a decode step (one new token per row): matmuls of few rows against a whole
weight matrix, split along the contracted dimension so that the GPU has enough output tiles.

At M = 128 rows a projection with N = 896 outputs has about 7 output tiles of 128 columns for the
132 SMs of an H100, so most of the chip idles while the weights stream. Splitting the contracted
dimension K into s slices gives s times more tiles; each slice's product is a float32 partial and
the partials are summed in float32 (split-K). Two formulations (`ModelConfig.decode_gemm`):
- 'xla': a batched matmul over the s slices, the library GEMM (cuBLAS / Triton) picks its tiles;
- 'pallas': `pallas_matmul`, a Triton kernel whose grid is (row blocks, N blocks, K splits).
The float32 partials (s x M x N x 4 bytes) are written and read back: for the gate/up projection
of Qwen2.5-0.5B at 128 rows and s = 4 that is 20 MB beside 17 MB of weights (unmeasured: the
benchmark's `decodevars` part of `benchmarks/issue31_gpu.sh` decides).

Shape letters: M rows, K contracted, N outputs, S splits.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl


def split_count(K: int, want: int) -> int:
  """The XLA split-K's slice count for a contracted dimension of K: the largest divisor of K <= want
  (`ModelConfig.decode_split_k`; 0 or 1: no split)."""
  return max(d for d in range(1, max(1, min(want, K)) + 1) if K % d == 0)


def xla_matmul(x_MxK, w_KxN, splits: int):
  """x @ w as S = `split_count(K, splits)` float32 partial products, summed in float32, cast to x's dtype."""
  (M, K), N = x_MxK.shape, w_KxN.shape[1]
  s = split_count(K, splits)
  if s == 1:
    return jnp.dot(x_MxK, w_KxN)
  x_SxMxK = x_MxK.reshape(M, s, K // s).swapaxes(0, 1)
  part_SxMxN = jnp.einsum("smk,skn->smn", x_SxMxK, w_KxN.reshape(s, K // s, N), preferred_element_type=jnp.float32)
  return part_SxMxN.sum(0).astype(x_MxK.dtype)


SMS = 132
"""Streaming multiprocessors of an H100 SXM (an H200 has as many)."""


def _pow2_divisor(n: int, largest: int) -> int:
  """The largest power of two <= largest that divides n (at least 1)."""
  b = largest
  while n % b:
    b //= 2
  return b


def pallas_blocks(M: int, K: int, N: int, splits: int, itemsize: int = 2):
  """Tiling of `pallas_matmul`: (BM, BN, BK, S, num_stages, num_warps). Rows are padded to BM (a
  power of two from 16 to 128, or a multiple of 128); BN (<= 128; 64 where 128 leaves fewer programs
  than `SMS`) and BK (<= 256, <= 128 from 128 rows up) are powers of two dividing N and K, BK as
  large as leaves at least S chunks of K; S is capped at K // BK. Pipeline stages fill at most
  160 KB of an H100 SM's 227 KB of shared memory. Chosen for M <= 256 on Hopper, not measured."""
  BM = min(128, max(16, 1 << (M - 1).bit_length()))
  BN = _pow2_divisor(N, 128)
  if BN == 128 and -(-M // BM) * (N // BN) * splits < SMS:  # too few programs for the SMs: narrower columns
    BN = 64
  top = 128 if BM >= 128 else 256
  BK = _pow2_divisor(K, top)
  while BK > 16 and K // BK < splits:
    BK //= 2
  S = max(1, min(splits, K // BK))
  stages = max(1, min(4, 160 * 1024 // ((BM + BN) * BK * itemsize)))
  warps = 8 if BM * BN >= 128 * 128 else 4
  return BM, BN, BK, S, stages, warps


def pallas_fits(K: int, N: int) -> bool:
  """Whether `pallas_matmul` takes (K, N): both multiples of 16 (Triton's smallest dot tile)."""
  return K % 16 == 0 and N % 16 == 0


def _kernel(x_ref, w_ref, o_ref, *, bk: int, chunks: int, splits: int):
  """One (row block, N block, K split) program: the sum over its K chunks, chunks [lo, hi) of
  `chunks`, of x[:, chunk] @ w[chunk, :] in float32."""
  s = pl.program_id(2)
  lo, hi = s * chunks // splits, (s + 1) * chunks // splits

  def body(c, acc):
    k = pl.multiple_of(c * bk, bk)
    return acc + jnp.dot(x_ref[:, pl.ds(k, bk)], w_ref[pl.ds(k, bk), :], preferred_element_type=jnp.float32)

  o_ref[...] = jax.lax.fori_loop(lo, hi, body, jnp.zeros(o_ref.shape, jnp.float32))


def pallas_matmul(x_MxK, w_KxN, splits: int):
  """x @ w through a Pallas split-K kernel (Triton on GPU, interpreted elsewhere): each program
  streams its K range of one BK x BN column block of w in BK chunks against the matching M x BK
  slices of x, accumulating in float32, and writes a float32 partial; XLA sums the S partials and
  casts to x's dtype. Needs K and N multiples of 16 (`pallas_fits`); rows are padded."""
  (M, K), N = x_MxK.shape, w_KxN.shape[1]
  BM, BN, BK, S, stages, warps = pallas_blocks(M, K, N, max(splits, 1), x_MxK.dtype.itemsize)
  Mp = -(-M // BM) * BM
  x = jnp.pad(x_MxK, ((0, Mp - M), (0, 0)))
  interpret = jax.default_backend() != "gpu"
  params = {} if interpret else {"compiler_params": _triton_params(warps, stages)}
  part_SxMxN = pl.pallas_call(
      functools.partial(_kernel, bk=BK, chunks=K // BK, splits=S),
      grid=(Mp // BM, N // BN, S),
      in_specs=[pl.BlockSpec((BM, K), lambda m, n, s: (m, 0)), pl.BlockSpec((K, BN), lambda m, n, s: (0, n))],
      out_specs=pl.BlockSpec((None, BM, BN), lambda m, n, s: (s, m, n)),
      out_shape=jax.ShapeDtypeStruct((S, Mp, N), jnp.float32),
      interpret=interpret, name="decode_gemm", **params)(x, w_KxN)
  return part_SxMxN.sum(0)[:M].astype(x_MxK.dtype)


def _triton_params(num_warps: int, num_stages: int):
  from jax.experimental.pallas import triton as plgpu
  return plgpu.CompilerParams(num_warps=num_warps, num_stages=num_stages)


def decode_matmul(h, w, n_contract: int, splits: int, gemm: str):
  """h @ w contracting h's last `n_contract` dimensions with w's first ones (the layout of every
  decoder projection, e.g. 'btnh,nhd->btd'), through `xla_matmul` or `pallas_matmul` (`gemm`) with
  `splits` K slices. 'pallas' falls back to 'xla' under a mesh of several devices (the kernel has no
  partitioning rule) and for K or N not multiples of 16."""
  lead, k_dims, n_dims = h.shape[:-n_contract], h.shape[-n_contract:], w.shape[n_contract:]
  K, N = math.prod(k_dims), math.prod(n_dims)
  x, w2 = h.reshape(-1, K), w.reshape(K, N)
  mesh = jax.sharding.get_abstract_mesh()
  if gemm == "pallas" and pallas_fits(K, N) and (mesh.empty or mesh.size == 1):
    out = pallas_matmul(x, w2, splits)
  else:
    out = xla_matmul(x, w2, splits)
  return out.reshape(*lead, *n_dims)
