"""Codes as a dense (B, n) array or as the sparse path's winner entries (docs/speed.md).

What the training step reads from a batch's codes is a few reductions: which latents fired on
the (masked) rows (dead counters, the cascade's live atoms), the mean L0, and the smallest
positive code (the BatchTopK threshold EMA, SPEC 2.3). The sparse path (csae_jax/sparse.py) has
the k * B winners as entries; building the dense (B, n) codes only to reduce them again cost a
zero fill and a scatter of B x n floats per level and step (about 0.13 s of a 1.1 s step at the
release's shapes). These functions take either form and give the same answer; `dense` builds the
array where one is really wanted (it is dead code for XLA when nothing reads it).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Entries(NamedTuple):
  """Winners (rows[i], cols[i]) with values vals[i] (no gradient); entries with valid False are
  padding. shape is the dense (B, n)."""
  rows: jax.Array
  cols: jax.Array
  vals: jax.Array
  valid: jax.Array
  shape: tuple[int, int]


def _entry_on(c: Entries, row_mask, eps=0.0):
  on = c.valid & (c.vals > eps)
  if row_mask is not None:
    on = on & jnp.take(row_mask, c.rows)
  return on


def active(codes, row_mask=None, eps: float = 0.0) -> jax.Array:
  """(n,) bool: latent j exceeds eps on some row in row_mask (all rows when None)."""
  if isinstance(codes, Entries):
    on = _entry_on(codes, row_mask, eps)
    return jnp.zeros((codes.shape[1],), jnp.bool_).at[codes.cols].max(on)
  a = codes > eps
  if row_mask is not None:
    a = a & row_mask[:, None]
  return jnp.any(a, axis=0)


def l0_sum(codes, row_weight=None) -> jax.Array:
  """sum over rows of row_weight[i] * #{j: codes[i, j] > 0} (float32)."""
  if isinstance(codes, Entries):
    on = (codes.valid & (codes.vals > 0)).astype(jnp.float32)
    if row_weight is not None:
      on = on * jnp.take(row_weight, codes.rows)
    return jnp.sum(on)
  per_row = jnp.sum(codes > 0, axis=-1).astype(jnp.float32)
  if row_weight is not None:
    per_row = row_weight * per_row
  return jnp.sum(per_row)


def min_positive(codes) -> jax.Array:
  """Smallest positive code (inf when none)."""
  if isinstance(codes, Entries):
    return jnp.min(jnp.where(codes.valid & (codes.vals > 0), codes.vals, jnp.inf))
  return jnp.min(jnp.where(codes > 0, codes, jnp.inf))


def dense(codes) -> jax.Array:
  """The (B, n) codes (for entries: zeros with the winners scattered in)."""
  if isinstance(codes, Entries):
    vals = jnp.where(codes.valid, codes.vals, 0.0)
    return jnp.zeros(codes.shape, jnp.float32).at[codes.rows, codes.cols].add(vals)
  return codes


def live_of(out, row_mask, eps: float) -> jax.Array:
  """Latents of a level's LossOutput active (> eps) on some row in row_mask: the cascade's live
  atoms (SPEC 3). With eps 0, the family's own `active` mask where it gives one (the sparse path
  builds it from its entries, so no dense codes are needed)."""
  if eps == 0 and out.active is not None:
    return out.active
  return active(out.codes, row_mask, eps)
