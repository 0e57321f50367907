"""JumpReLU SAE (SPEC 2.4) with straight-through pseudo-derivatives (rectangle kernel).

pi = W_enc x + b_enc; f = pi * H(pi - theta); theta = exp(log_threshold) per latent.
  df/dpi = H(pi - theta);  df/dtheta = -(theta/eps) K((pi - theta)/eps)
  dH/dpi = 0;              dH/dtheta = -(1/eps) K((pi - theta)/eps),  K(u) = 1[|u| < 1/2]
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from csae_jax import conventions as cv
from csae_jax.families import base


@dataclasses.dataclass(frozen=True)
class Config(base.BaseConfig):
  l0_coef: float = 1.0
  bandwidth: float = 0.001
  init_threshold: float = 0.001
  l0_target: float | None = None   # option: penalty lambda (L0 / L0_target - 1)^2
  adam_b1: float = 0.0             # the published default

  def validate(self):
    super().validate()
    if self.bandwidth <= 0 or self.init_threshold <= 0:
      raise ValueError(f"bandwidth and init_threshold must be > 0, got {self.bandwidth}, "
                       f"{self.init_threshold}")
    if self.l0_target is not None and self.l0_target <= 0:
      raise ValueError(f"l0_target must be > 0, got {self.l0_target}")


def _rect(u):
  return (jnp.abs(u) < 0.5).astype(u.dtype)


@jax.custom_vjp
def jumprelu(pi, theta, eps):
  return pi * (pi > theta).astype(pi.dtype)


def _jumprelu_fwd(pi, theta, eps):
  return jumprelu(pi, theta, eps), (pi, theta, eps)


def _jumprelu_bwd(res, g):
  pi, theta, eps = res
  d_pi = (pi > theta).astype(pi.dtype) * g
  d_theta = -(theta / eps) * _rect((pi - theta) / eps) * g
  d_theta = jnp.sum(d_theta.reshape(-1, theta.shape[-1]), axis=0)
  return d_pi, d_theta, jnp.zeros_like(eps)


jumprelu.defvjp(_jumprelu_fwd, _jumprelu_bwd)


@jax.custom_vjp
def heaviside(pi, theta, eps):
  return (pi > theta).astype(pi.dtype)


def _heaviside_fwd(pi, theta, eps):
  return heaviside(pi, theta, eps), (pi, theta, eps)


def _heaviside_bwd(res, g):
  pi, theta, eps = res
  d_theta = -(1.0 / eps) * _rect((pi - theta) / eps) * g
  d_theta = jnp.sum(d_theta.reshape(-1, theta.shape[-1]), axis=0)
  return jnp.zeros_like(pi), d_theta, jnp.zeros_like(eps)


heaviside.defvjp(_heaviside_fwd, _heaviside_bwd)


def init(key, cfg: Config, x_first=None):
  del x_first
  p = cv.init_tied(key, cfg.d, cfg.n)
  p["log_threshold"] = jnp.full((cfg.n,), math.log(cfg.init_threshold), jnp.float32)
  return p


def init_state(cfg):
  return base.dead_state(cfg)


def preact(params, x):
  return x @ params["W_enc"] + params["b_enc"]


def dense_activation(params, x, cfg=None):
  return jax.nn.relu(preact(params, x))


def encode(params, state, x, cfg):
  del state
  eps = jnp.asarray(cfg.bandwidth, jnp.float32)
  return jumprelu(preact(params, x), jnp.exp(params["log_threshold"]), eps)


decode = base.linear_decode


def loss(params, state, x, cfg, *, step=None, row_mask=None, target=None):
  target = x if target is None else target
  eps = jnp.asarray(cfg.bandwidth, jnp.float32)
  pi = preact(params, x)
  theta = jnp.exp(params["log_threshold"])
  f = jumprelu(pi, theta, eps)
  xhat = decode(params, f, cfg)
  recon = cv.recon_loss(target, xhat, row_mask)
  l0 = cv.masked_mean(jnp.sum(heaviside(pi, theta, eps), axis=-1), row_mask)
  if cfg.l0_target is None:
    sparsity = l0
  else:
    sparsity = jnp.square(l0 / cfg.l0_target - 1.0)
  total = recon + cfg.l0_coef * sparsity
  new_state = {"tokens_since_fired": cv.update_fired(state["tokens_since_fired"], f, row_mask)}
  metrics = base.common_metrics(target, xhat, f, new_state, cfg, row_mask)
  metrics.update(loss=total, recon=recon, sparsity=sparsity)
  return total, base.LossOutput(metrics, new_state, f)


def fold_scale(params, state, s, cfg=None):
  """pi scales by s when b_enc does; thresholds scale with it (log_threshold + log s)."""
  p = dict(params)
  p["b_dec"] = p["b_dec"] * s
  p["b_enc"] = p["b_enc"] * s
  p["log_threshold"] = p["log_threshold"] + jnp.log(s)
  return p, dict(state)


def to_saelens(cfg, params, state) -> base.SAELensLevel:
  del cfg, state
  tensors = base.saelens_linear(params)
  tensors["threshold"] = np.exp(np.asarray(params["log_threshold"], np.float32)).astype(np.float32)
  return base.SAELensLevel(tensors, {}, {})


SPEC = base.FamilySpec(
    name="jumprelu", display="JumpReLU", selection="jump", centred=False,
    latent_axes={**base.TIED_AXES, "log_threshold": base.Latent(0)},
    saelens_architecture="jumprelu", saelens=to_saelens,
    paper_options={})
