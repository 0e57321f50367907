"""BatchTopK SAE (SPEC 2.3): keep the B*k largest entries over the whole batch.

Training ranks over the batch; inference uses the EMA threshold theta: f = z * 1[z > theta].
With a row mask (Level-2 dynamic masking, SPEC 3) only masked rows are ranked and K = k * n_live.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from csae_jax import codes as codes_lib
from csae_jax import conventions as cv
from csae_jax import ops
from csae_jax import sparse
from csae_jax.families import base
from csae_jax.families import topk


@dataclasses.dataclass(frozen=True)
class Config(base.KConfig):
  threshold_start: int = 1000
  threshold_decay: float = 0.999


init = topk.init
dense_activation = topk.dense_activation
decode = base.linear_decode


def init_state(cfg):
  return {**base.dead_state(cfg), **base.threshold_state()}


# Candidates per row for the batch selection: 4 x the mean row's share, at least 16. With k = 1
# (the cascade's Level 2) 4 candidates were too few: 159 of 8192 atom rows held more winners, so
# the exact fallback ran every step (0.29 s vs 0.055 s with 16, at n1 = 8192, n2 = 1024).
ROW_CAP_FACTOR = 4
ROW_CAP_MIN = 16


def batch_select(z, k, row_mask=None, k_hint: int | None = None):
  """Keep the k * n_rows largest entries of z (B, n); masked-out rows are never kept.

  k_hint (static, the target k; k itself when it is a Python int) sizes the static lists of
  sparse.select_batch, the block-maxima selection (docs/speed.md section 5: 12 ms against 178 ms
  for ops.batch_topk_mask at 1024 x 8192, k 8), whose winners are scattered into the mask. On a
  tie at the threshold, or k above k_hint, ops.batch_topk_mask answers (its position tie-break).
  """
  z = jnp.asarray(z)                   # callers also pass NumPy codes (evaluation)
  if row_mask is None:
    n_rows = z.shape[0]
    valid = None
  else:
    row_mask = jnp.asarray(row_mask)
    n_rows = jnp.sum(row_mask, dtype=jnp.int32)
    valid = row_mask[:, None]
  if k_hint is None and isinstance(k, int):
    k_hint = k
  cap = None if k_hint is None else max(ROW_CAP_MIN, ROW_CAP_FACTOR * k_hint)

  def by_candidates():
    return ops.batch_topk_mask(z, n_rows * k, valid=valid, row_cap=cap)

  if k_hint is None or z.ndim != 2:
    return by_candidates()
  rows, cols, ok, fits = sparse.select_batch(z, k, row_mask, z.shape[0] * k_hint)

  def by_block_maxima():
    rows_or_out = jnp.where(ok, rows, z.shape[0])          # padding entries are dropped
    return jnp.zeros(z.shape, bool).at[rows_or_out, cols].set(True, mode="drop")

  return jax.lax.cond(fits, by_block_maxima, by_candidates)


def encode_batch(params, x, k, row_mask=None, k_hint: int | None = None):
  """Training-time BatchTopK codes and the dense ReLU pre-activation."""
  z = dense_activation(params, x)
  keep = batch_select(z, k, row_mask, k_hint)      # k_hint defaults to k when k is an int
  return z * jax.lax.stop_gradient(keep.astype(z.dtype)), z, keep


def encode_threshold(params, x, theta):
  z = dense_activation(params, x)
  return z * (z > theta).astype(z.dtype)


def encode(params, state, x, cfg):
  """Inference codes: thresholded once theta is set, batch top-k over x before that."""
  theta = state["threshold"]
  return jax.lax.cond(theta >= 0, lambda: encode_threshold(params, x, theta),
                      lambda: encode_batch(params, x, cfg.k, k_hint=cfg.k)[0])


def batch_loss(params, state, x, cfg, reconstruct, *, step=None, row_mask=None, target=None,
               sparse_reconstruct=None):
  """The BatchTopK objective around a reconstruction term; Matryoshka passes its prefix sums.

  reconstruct(params, f, target, row_mask, cfg) -> (recon loss, xhat, extra metrics). Selection,
  AuxK, the dead counters and the inference-threshold EMA (SPEC 2.3) are the same for both.
  sparse_reconstruct(params, (rows, cols, vals), target, row_mask, cfg) -> the same from the
  winners' entries: the sparse code path (csae_jax/sparse.py) when cfg.sparse selects it.
  """
  target = x if target is None else target
  k = base.annealed_k(cfg, step)

  def tail(p, t, f, z, recon_out):
    recon, xhat, extra = recon_out
    metrics = {}
    total = topk.add_auxk(recon, metrics, p, z, t, xhat, state, cfg, row_mask)
    new_state = {
        "tokens_since_fired": cv.update_fired(state["tokens_since_fired"], f, row_mask),
        # min over kept positive z = min over positive codes (f = z on the kept entries)
        "threshold": base.update_threshold(state["threshold"], f, 0 if step is None else step,
                                           cfg.threshold_start, cfg.threshold_decay),
    }
    metrics.update(base.common_metrics(t, xhat, f, new_state, cfg, row_mask))
    metrics.update(loss=total, recon=recon, k=jnp.asarray(k, jnp.float32),
                   threshold=new_state["threshold"])
    metrics.update(extra)
    return total, base.LossOutput(metrics, new_state, codes_lib.dense(f),
                                  codes_lib.active(f, row_mask))

  def dense(p, xx, t):
    f, z, _ = encode_batch(p, xx, k, row_mask, k_hint=cfg.k)
    return tail(p, t, f, z, reconstruct(p, f, t, row_mask, cfg))

  if sparse_reconstruct is None or not sparse.enabled(cfg, per_row=False):
    return dense(params, x, target)

  def from_entries(p, xx, t, f, entries):
    return tail(p, t, f, lambda: dense_activation(p, xx),
                sparse_reconstruct(p, entries, t, row_mask, cfg))

  return sparse.loss_by_path(params, x, target, cfg, k, row_mask, per_row=False, dense=dense,
                             from_entries=from_entries)


def _reconstruct(params, f, target, row_mask, cfg):
  xhat = decode(params, f, cfg)
  return cv.recon_loss(target, xhat, row_mask), xhat, {}


def _reconstruct_entries(params, entries, target, row_mask, cfg):
  del cfg
  xhat = sparse.decode_entries(params, *entries, target.shape[0])
  return cv.recon_loss(target, xhat, row_mask), xhat, {}


def loss(params, state, x, cfg, *, step=None, row_mask=None, target=None):
  return batch_loss(params, state, x, cfg, _reconstruct, step=step, row_mask=row_mask,
                    target=target, sparse_reconstruct=_reconstruct_entries)


def fold_scale(params, state, s, cfg=None):
  return base.fold_linear_scale(params, state, s)


def to_saelens(cfg, params, state) -> base.SAELensLevel:
  """SAELens has no BatchTopK at inference; its JumpReLU with theta on every latent is the same."""
  theta = float(np.asarray(state["threshold"]))
  if theta < 0:
    raise ValueError(f"the inference threshold was never set (it is set after step "
                     f"{cfg.threshold_start} of training); SAELens's JumpReLU form needs it")
  tensors = base.saelens_linear(params)
  tensors["threshold"] = np.full((cfg.n,), theta, np.float32)
  return base.SAELensLevel(tensors, {}, {})


SPEC = base.FamilySpec(
    name="batchtopk", display="BatchTopK", selection="batch_topk", centred=True,
    latent_axes=base.TIED_AXES, saelens_architecture="jumprelu", saelens=to_saelens,
    paper_options={"aux_k": 512})
