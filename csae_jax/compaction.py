"""Live-atom compaction for cascade levels >= 2 (SPEC 3, dynamic masking; docs/speed.md).

The masked computation feeds all n_{l-1} atoms of the level below and ranks only the live ones.
At most `bound` of them can be live (k * B for a k-sparse level 1 at its target k, n for dense
families), and in the release's run that is 6144 of 20000. Here the live atoms are gathered, in
index order, into a buffer of static capacity, the level runs on the buffer with a row mask for
the padding, and autodiff scatters the gradients back (the transpose of the gather).

Capacities: buckets bound, 2 bound, 4 bound, ... below n (and 1/2, 5/8, 3/4, 7/8 of a bound
of at least FINE_MIN_BOUND rows), and the masked computation itself as the last bucket; lax.switch picks the smallest that holds this step's live count. While k anneals
down from d the live count moves through the buckets; every bucket is compiled once with the step
(no recompilation at run time), and a count above every bucket is still exact (masked branch).
Gathering in index order keeps the BatchTopK position tie-break of the masked computation.
"""
from __future__ import annotations

import math

import jax.numpy as jnp
from csae_jax import codes as codes_lib
from csae_jax import sparse

COMPACTION_MODES = ("auto", "off")
BUCKET_GROWTH = 2
FINE_FRACTIONS = (1 / 2, 5 / 8, 3 / 4, 7 / 8)   # extra buckets below a large bound
FINE_MIN_BOUND = 1024
ALIGN = 8          # capacities are multiples of 8, so the buffer splits over 8-device meshes


def live_bound(level_cfg, rows: int) -> int:
  """Most atoms of this level that can be active on `rows` rows (its target k; n if dense)."""
  k = getattr(level_cfg, "k", None)
  if k is None:
    return level_cfg.n
  return min(level_cfg.n, k * rows)


def _align(c: float) -> int:
  return -(-int(math.ceil(c)) // ALIGN) * ALIGN


def buckets(bound: int, n: int) -> tuple[int, ...]:
  """Static capacities strictly below n: `bound` and its doublings; for bounds of at least
  FINE_MIN_BOUND (and below n) also FINE_FRACTIONS of it, since a trained level's live count sits well below its
  bound (3000-5000 of 6144 in the release's run) and the level's encoder matmul scales with the
  capacity it runs on."""
  caps = set()
  if FINE_MIN_BOUND <= bound < n:
    caps.update(_align(bound * f) for f in FINE_FRACTIONS)
  c = _align(max(bound, 1))
  while c < n:
    caps.add(c)
    c *= BUCKET_GROWTH
  return tuple(sorted(x for x in caps if x < n))


def level_buckets(level_cfgs, batch_rows: int) -> list[tuple[int, ...]]:
  """Capacities of each level >= 2's buffer (index l-1 for level l+1, 0-based l >= 1)."""
  out, rows = [], batch_rows
  for l in range(1, len(level_cfgs)):
    bound = live_bound(level_cfgs[l - 1], rows)
    out.append(buckets(bound, level_cfgs[l - 1].n))
    rows = bound
  return out




def run_level(fam, params, state, x_in, target, mask, cfg, *, step, caps, eps):
  """Level loss over the rows in `mask`: (loss, metrics, new state, live mask of its latents).

  Equals fam.loss(..., row_mask=mask) on all rows to float32 round-off; runs on a compacted
  buffer whenever the live count fits one of `caps`. Each bucket computes its own gradients
  (sparse.branch_loss), so no bucket pays for another's residuals.
  """
  def masked(p, a, t):
    loss, out = fam.loss(p, state, a, cfg, step=step, row_mask=mask, target=t)
    return loss, (out.metrics, out.state, codes_lib.live_of(out, mask, eps))

  if not caps:
    loss, (metrics, new_state, live) = masked(params, x_in, target)
    return loss, metrics, new_state, live
  n_live = jnp.sum(mask, dtype=jnp.int32)
  same = target is x_in

  def compacted(cap):
    def branch(p, a, t):
      idx = jnp.nonzero(mask, size=cap, fill_value=0)[0]
      valid = jnp.arange(cap) < n_live
      xb = sparse.take_rows(a, idx)
      tb = xb if same else sparse.take_rows(t, idx)
      loss, out = fam.loss(p, state, xb, cfg, step=step, row_mask=valid, target=tb)
      return loss, (out.metrics, out.state, codes_lib.live_of(out, valid, eps))
    return branch

  index = jnp.sum(n_live > jnp.asarray(caps, jnp.int32)).astype(jnp.int32)
  loss, (metrics, new_state, live) = sparse.branch_loss(
      index, [compacted(c) for c in caps] + [masked], params, x_in, target)
  return loss, metrics, new_state, live
