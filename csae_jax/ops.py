"""Selection primitives shared by the k-sparse families (SPEC sections 2.2, 2.3, 3).

Both selections avoid sorting. Per-row top-k with a static k uses `lax.top_k` and takes the
threshold as `.min(-1)` of the values (indexing `[..., -1]` makes XLA:CPU fall back to a full sort).
Selections with a traced k (batch-wide top-(B*k), k annealing, Level-2 batches of n_live atoms)
find the k-th largest value by bisection on the int32 bit pattern of non-negative floats, which is
monotone in the value: 31 counting passes, exact, static shapes.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

_INF_BITS = 0x7F800000  # bit pattern of +inf; finite non-negative floats are below it.


def _nonneg_bits(z: jax.Array, valid: jax.Array | None) -> jax.Array:
  """int32 view of z (assumed >= 0); invalid entries get -1 so they are never selected."""
  bits = lax.bitcast_convert_type(jnp.maximum(z, 0.0).astype(jnp.float32), jnp.int32)
  if valid is not None:
    bits = jnp.where(valid, bits, -1)
  return bits


def _bisect_bits(count_ge, shape, k) -> jax.Array:
  """Largest t in [0, +inf bits] with count_ge(t) >= k: 31 counting passes (exact, no sort)."""
  lo = jnp.zeros(shape, jnp.int32)
  hi = jnp.full(shape, _INF_BITS + 1, jnp.int32)
  k = jnp.asarray(k, jnp.int32)

  def body(_, carry):
    lo, hi = carry
    mid = lo + (hi - lo) // 2
    ok = count_ge(mid) >= k
    return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

  lo, _ = lax.fori_loop(0, 31, body, (lo, hi))
  return lo


def _kth_largest_bits(bits: jax.Array, k: jax.Array, axis) -> jax.Array:
  """Largest t with count(bits >= t) >= k along `axis` (keepdims); 0 when fewer than k valid."""
  shape = list(bits.shape)
  if axis is None:
    shape = [1] * bits.ndim
  else:
    shape[axis] = 1
  return _bisect_bits(
      lambda t: jnp.sum(bits >= t, axis=axis, keepdims=True, dtype=jnp.int32), shape, k)


def kth_largest_bits_union(parts, k) -> jax.Array:
  """Scalar largest t with count(bits >= t) >= k over several int32 bit-pattern arrays."""
  return _bisect_bits(lambda t: sum(jnp.sum(p >= t, dtype=jnp.int32) for p in parts), (), k)


def _select(bits: jax.Array, t: jax.Array, k, axis) -> jax.Array:
  """Entries above the threshold t plus enough ties at t (by position) to make exactly k."""
  above = bits > t
  n_above = jnp.sum(above, axis=axis, keepdims=True, dtype=jnp.int32)
  tie = bits == t
  need = jnp.asarray(k, jnp.int32) - n_above

  def break_ties(_):
    if axis is None:
      rank = jnp.cumsum(tie.reshape(-1).astype(jnp.int32)).reshape(tie.shape)
    else:
      rank = jnp.cumsum(tie.astype(jnp.int32), axis=axis)
    return above | (tie & (rank <= need))

  n_tie = jnp.sum(tie, axis=axis, keepdims=True, dtype=jnp.int32)
  # Only pay for the cumulative sum when ties straddle the threshold (zeros, duplicated values).
  return lax.cond(jnp.any(n_tie > need), break_ties, lambda _: above | tie, None)


def topk_mask(z: jax.Array, k, *, axis=None, valid: jax.Array | None = None) -> jax.Array:
  """Boolean mask of exactly min(k, #valid) largest entries of non-negative z.

  axis=None ranks over the whole array (BatchTopK); axis=-1 ranks each row (TopK with traced k).
  Ties at the threshold are broken by position so that the count is exact.
  """
  bits = _nonneg_bits(z, valid)
  return _select(bits, _kth_largest_bits(bits, k, axis), k, axis)


def batch_topk_mask(z: jax.Array, k_total, *, valid: jax.Array | None = None,
                    row_cap: int | None = None) -> jax.Array:
  """topk_mask over the whole (B, n) array, faster when no row holds more than row_cap winners.

  The bisection runs over each row's top-row_cap candidates (one lax.top_k) instead of all B*n
  entries. The answer is exact whenever every row's smallest candidate is below the threshold
  found (then no entry outside the candidates can reach it); otherwise, e.g. while k anneals
  down from d, it falls back to bisection over the full array.
  """
  n = z.shape[-1]
  if row_cap is None or row_cap >= n or z.ndim != 2:
    return topk_mask(z, k_total, axis=None, valid=valid)
  zz = jnp.maximum(z, 0.0).astype(jnp.float32)
  if valid is not None:
    zz = jnp.where(valid, zz, -1.0)        # negative bit patterns: never counted
  cand = lax.top_k(zz, row_cap)[0]
  cand_bits = lax.bitcast_convert_type(cand, jnp.int32)
  t = _kth_largest_bits(cand_bits, k_total, None)[0, 0]
  row_min_bits = lax.bitcast_convert_type(cand.min(-1), jnp.int32)
  exact = ~jnp.any(row_min_bits >= t)     # no winner can hide outside the candidates
  # With no tie straddling the cut, "bits >= t" is the answer: one pass over the full array.
  # Ties at t (a duplicated float32 value: ~10% of steps at B*n = 33.5M) keep the threshold
  # right and only need the position tie-break; a saturated row needs the full search.
  no_ties = jnp.sum(cand_bits >= t, dtype=jnp.int32) == jnp.asarray(k_total, jnp.int32)
  bits = lax.bitcast_convert_type(zz, jnp.int32)
  return lax.cond(
      exact,
      lambda: lax.cond(no_ties, lambda: bits >= t,
                       lambda: _select(bits, t.reshape(1, 1), k_total, None)),
      lambda: topk_mask(z, k_total, axis=None, valid=valid))


def row_topk_mask_static(z: jax.Array, k: int) -> jax.Array:
  """Per-row top-k of non-negative z for a Python-int k: lax.top_k values, threshold = min.

  Entries equal to the threshold are kept; with continuous values this is exactly k per row,
  and a tie at 0 keeps only zeros, which contribute nothing.
  """
  vals, _ = lax.top_k(z, k)
  thr = vals.min(-1, keepdims=True)
  return z >= thr


def row_topk_mask(z: jax.Array, k) -> jax.Array:
  """Per-row top-k; static k uses lax.top_k, a traced k uses bisection."""
  if isinstance(k, int):
    return row_topk_mask_static(z, min(k, z.shape[-1]))
  return topk_mask(z, k, axis=-1)


def safe_pow(f: jax.Array, p) -> jax.Array:
  """f**p for f >= 0 with finite gradients at f == 0 (double where), SPEC 2.6."""
  pos = f > 0
  safe = jnp.where(pos, f, 1.0)
  return jnp.where(pos, safe ** p, 0.0)
