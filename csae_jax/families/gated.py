"""Gated SAE (SPEC 2.5): a gate path decides which latents fire, a magnitude path how much.

xt = x - b_dec; pi_gate = xt W + b_gate; pi_mag = exp(r_mag) * (xt W) + b_mag;
f = 1[pi_gate > 0] * ReLU(pi_mag). The auxiliary reconstruction uses a stop-gradient decoder, so
it trains only the gate path (b_dec still gets gradient through the input centring xt, as in the
paper).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from csae_jax import conventions as cv
from csae_jax.families import base

sg = jax.lax.stop_gradient


@dataclasses.dataclass(frozen=True)
class Config(base.BaseConfig):
  l1_coef: float = 5.0

  def validate(self):
    super().validate()
    if self.l1_coef < 0:
      raise ValueError(f"l1_coef must be >= 0, got {self.l1_coef}")


def init(key, cfg, x_first=None):
  del x_first
  p = cv.init_tied(key, cfg.d, cfg.n)
  del p["b_enc"]
  p["b_gate"] = jnp.zeros((cfg.n,), jnp.float32)
  p["r_mag"] = jnp.zeros((cfg.n,), jnp.float32)
  p["b_mag"] = jnp.zeros((cfg.n,), jnp.float32)
  return p


def init_state(cfg):
  return base.dead_state(cfg)


def paths(params, x):
  proj = base.centered_matmul(x, params["b_dec"], params["W_enc"])
  pi_gate = proj + params["b_gate"]
  pi_mag = jnp.exp(params["r_mag"]) * proj + params["b_mag"]
  return pi_gate, pi_mag


def encode(params, state, x, cfg=None):
  del state
  pi_gate, pi_mag = paths(params, x)
  return sg((pi_gate > 0).astype(x.dtype)) * jax.nn.relu(pi_mag)


def dense_activation(params, x, cfg=None):
  """The magnitude path: what each latent would contribute if its gate were open."""
  return jax.nn.relu(paths(params, x)[1])


decode = base.linear_decode


def loss(params, state, x, cfg, *, step=None, row_mask=None, target=None):
  target = x if target is None else target
  pi_gate, pi_mag = paths(params, x)
  f = sg((pi_gate > 0).astype(x.dtype)) * jax.nn.relu(pi_mag)
  xhat = decode(params, f, cfg)
  recon = cv.recon_loss(target, xhat, row_mask)
  gate = jax.nn.relu(pi_gate)
  sparsity = cv.masked_mean(jnp.sum(gate, axis=-1), row_mask)
  aux = cv.recon_loss(target, gate @ sg(params["W_dec"]) + sg(params["b_dec"]), row_mask)
  total = recon + cfg.l1_coef * sparsity + aux
  new_state = {"tokens_since_fired": cv.update_fired(state["tokens_since_fired"], f, row_mask)}
  metrics = base.common_metrics(target, xhat, f, new_state, cfg, row_mask)
  metrics.update(loss=total, recon=recon, sparsity=sparsity, aux_loss=aux)
  return total, base.LossOutput(metrics, new_state, f)


def fold_scale(params, state, s, cfg=None):
  return base.fold_linear_scale(params, state, s, extra_scaled=("b_gate", "b_mag"))


def to_saelens(cfg, params, state) -> base.SAELensLevel:
  del cfg, state
  names = ("W_enc", "W_dec", "b_dec", "b_gate", "r_mag", "b_mag")
  return base.SAELensLevel({k: np.asarray(params[k], np.float32) for k in names}, {}, {})


SPEC = base.FamilySpec(
    name="gated", display="Gated", selection="gate", centred=True,
    latent_axes={"W_enc": base.Latent(1), "W_dec": base.Latent(0), "b_dec": None,
                 "b_gate": base.Latent(0), "r_mag": base.Latent(0), "b_mag": base.Latent(0)},
    saelens_architecture="gated", saelens=to_saelens, paper_options={})
