"""ReLU-L1 SAE (SPEC 2.1): f = ReLU(W_enc (x - b_dec) + b_enc), L1 penalty with linear warm-up.

`april2024=True` is Anthropic's April-2024 form: penalty lambda * sum_i f_i ||w_i|| and no
unit-norm constraint on the decoder.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from csae_jax import conventions as cv
from csae_jax.families import base


@dataclasses.dataclass(frozen=True)
class Config(base.BaseConfig):
  l1_coef: float = 5.0
  sparsity_warmup: int = 1000
  april2024: bool = False

  def validate(self):
    super().validate()
    if self.l1_coef < 0:
      raise ValueError(f"l1_coef must be >= 0, got {self.l1_coef}")

  def constrained_decoder(self) -> bool:
    return not self.april2024


def init(key, cfg: Config, x_first=None):
  del x_first
  return cv.init_tied(key, cfg.d, cfg.n)


def init_state(cfg: Config):
  return base.dead_state(cfg)


def dense_activation(params, x, cfg=None):
  return jax.nn.relu(base.centered_preact(params, x))


def encode(params, state, x, cfg: Config):
  del state
  return dense_activation(params, x, cfg)


decode = base.linear_decode


def sparsity_coef(cfg, step):
  if cfg.sparsity_warmup <= 0 or step is None:
    return jnp.asarray(cfg.l1_coef, jnp.float32)
  return cfg.l1_coef * jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / cfg.sparsity_warmup)


def l1_penalty(params, f, cfg: Config):
  if cfg.april2024:
    return jnp.sum(f * jnp.linalg.norm(params["W_dec"], axis=-1), axis=-1)
  return jnp.sum(jnp.abs(f), axis=-1)


def loss(params, state, x, cfg: Config, *, step=None, row_mask=None, target=None):
  target = x if target is None else target
  f = encode(params, state, x, cfg)
  xhat = decode(params, f, cfg)
  recon = cv.recon_loss(target, xhat, row_mask)
  sparsity = cv.masked_mean(l1_penalty(params, f, cfg), row_mask)
  lam = sparsity_coef(cfg, step)
  total = recon + lam * sparsity
  new_state = {"tokens_since_fired": cv.update_fired(state["tokens_since_fired"], f, row_mask)}
  metrics = base.common_metrics(target, xhat, f, new_state, cfg, row_mask)
  metrics.update(loss=total, recon=recon, sparsity=sparsity, sparsity_coef=lam)
  return total, base.LossOutput(metrics, new_state, f)


def fold_scale(params, state, s, cfg=None):
  return base.fold_linear_scale(params, state, s)


def to_saelens(cfg, params, state) -> base.SAELensLevel:
  del cfg, state
  return base.SAELensLevel(base.saelens_linear(params), {}, {})


SPEC = base.FamilySpec(
    name="relu", display="ReLU", selection="dense", centred=True, latent_axes=base.TIED_AXES,
    saelens_architecture="standard", saelens=to_saelens, paper_options={})
