"""TopK SAE with AuxK (SPEC 2.2): the k largest of ReLU(W_enc (x - b_dec) + b_enc) per token."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from csae_jax import codes as codes_lib
from csae_jax import conventions as cv
from csae_jax import ops
from csae_jax import sparse
from csae_jax.families import base


@dataclasses.dataclass(frozen=True)
class Config(base.KConfig):
  pass


def init(key, cfg, x_first=None):
  params = cv.init_tied(key, cfg.d, cfg.n)
  if x_first is not None:
    params["b_dec"] = cv.geometric_median(jnp.asarray(x_first, jnp.float32))
  return params


def init_state(cfg):
  return base.dead_state(cfg)


def dense_activation(params, x, cfg=None):
  return jax.nn.relu(base.centered_preact(params, x))


def encode_with_k(params, x, k):
  z = dense_activation(params, x)
  keep = ops.row_topk_mask(z, k)
  return z * jax.lax.stop_gradient(keep.astype(z.dtype)), z


def encode(params, state, x, cfg):
  del state
  return encode_with_k(params, x, cfg.k)[0]


decode = base.linear_decode


def add_auxk(total, metrics, params, z, target, xhat, state, cfg, row_mask=None):
  """Adds (1/32) L_aux when cfg.aux_k is set; dead = no firing for cfg.dead_tokens tokens.

  z: the ReLU'd pre-activation, or a function computing it (sparse path)."""
  if cfg.aux_k is None:
    return total
  dead = state["tokens_since_fired"] >= cfg.dead_tokens
  l_aux = base.auxk_loss(z, target - xhat, params["W_dec"], dead, cfg.aux_k, cfg.d, row_mask)
  metrics["aux_loss"] = l_aux
  return total + cfg.aux_coef * l_aux


def loss(params, state, x, cfg, *, step=None, row_mask=None, target=None):
  target = x if target is None else target
  k = base.annealed_k(cfg, step)

  def tail(p, t, f, xhat, z):
    recon = cv.recon_loss(t, xhat, row_mask)
    metrics = {}
    total = add_auxk(recon, metrics, p, z, t, xhat, state, cfg, row_mask)
    new_state = {"tokens_since_fired": cv.update_fired(state["tokens_since_fired"], f, row_mask)}
    metrics.update(base.common_metrics(t, xhat, f, new_state, cfg, row_mask))
    metrics.update(loss=total, recon=recon, k=jnp.asarray(k, jnp.float32))
    return total, base.LossOutput(metrics, new_state, codes_lib.dense(f),
                                  codes_lib.active(f, row_mask))

  def dense(p, xx, t):
    f, z = encode_with_k(p, xx, k)
    return tail(p, t, f, decode(p, f, cfg), z)

  def from_entries(p, xx, t, f, entries):
    xhat = sparse.decode_entries(p, *entries, xx.shape[0])
    return tail(p, t, f, xhat, lambda: dense_activation(p, xx))

  if sparse.enabled(cfg, per_row=True):
    return sparse.loss_by_path(params, x, target, cfg, k, row_mask, per_row=True, dense=dense,
                               from_entries=from_entries)
  return dense(params, x, target)


def fold_scale(params, state, s, cfg=None):
  return base.fold_linear_scale(params, state, s)


def to_saelens(cfg, params, state) -> base.SAELensLevel:
  del state
  return base.SAELensLevel(base.saelens_linear(params),
                           {"k": int(cfg.k), "rescale_acts_by_decoder_norm": False}, {})


SPEC = base.FamilySpec(
    name="topk", display="TopK", selection="row_topk", centred=True, latent_axes=base.TIED_AXES,
    saelens_architecture="topk", saelens=to_saelens, paper_options={"aux_k": 512})
