"""P-annealing SAE (SPEC 2.6): the ReLU SAE with penalty c * S_p(f), S_p = mean_batch sum_i f_i^p.

p steps from 1 to p_end in n_p_steps equal steps, the first at anneal_start and the rest spread to
the end of training. At each change c <- c * mean(S_p) / mean(S_p_next) over the last `history`
batches, so the penalty keeps its scale. f^p uses a double-where safe power (finite at f = 0).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from csae_jax import conventions as cv
from csae_jax import ops
from csae_jax.families import base
from csae_jax.families import relu

sg = jax.lax.stop_gradient


@dataclasses.dataclass(frozen=True)
class Config(base.BaseConfig):
  l1_coef: float = 5.0        # initial c
  anneal_start: int | None = None   # None: 20% into training
  total_steps: int = 10_000
  p_end: float = 0.2
  n_p_steps: int = 10
  history: int = 10

  @property
  def start(self) -> int:
    """The step of the first change of p."""
    return self.total_steps // 5 if self.anneal_start is None else self.anneal_start

  def validate(self):
    super().validate()
    cv.check_positive("total_steps", self.total_steps)
    if not 0 <= self.start < self.total_steps:
      raise ValueError(f"anneal_start={self.anneal_start} must lie in [0, total_steps="
                       f"{self.total_steps})")
    if not 0 < self.p_end <= 1:
      raise ValueError(f"p_end must be in (0, 1], got {self.p_end}")
    cv.check_positive("n_p_steps", self.n_p_steps)
    cv.check_positive("history", self.history)


init = relu.init
dense_activation = relu.dense_activation
decode = base.linear_decode
fold_scale = relu.fold_scale


def init_state(cfg):
  return {**base.dead_state(cfg), "c": jnp.asarray(cfg.l1_coef, jnp.float32),
          "p_index": jnp.asarray(0, jnp.int32),
          "hist_sp": jnp.zeros((cfg.history,), jnp.float32),
          "hist_sp_next": jnp.zeros((cfg.history,), jnp.float32),
          "hist_count": jnp.asarray(0, jnp.int32)}


def p_index(cfg, step):
  span = cfg.total_steps - cfg.start
  s = jnp.asarray(step, jnp.int32)
  idx = jnp.floor((s - cfg.start) * cfg.n_p_steps / span).astype(jnp.int32) + 1
  return jnp.where(s < cfg.start, 0, jnp.minimum(idx, cfg.n_p_steps))


def p_of(cfg, idx):
  return 1.0 - (1.0 - cfg.p_end) * jnp.asarray(idx, jnp.float32) / cfg.n_p_steps


def encode(params, state, x, cfg):
  del state
  return dense_activation(params, x)


def s_p(f, p, row_mask=None):
  return cv.masked_mean(jnp.sum(ops.safe_pow(f, p), axis=-1), row_mask)


def loss(params, state, x, cfg, *, step=None, row_mask=None, target=None):
  target = x if target is None else target
  step = 0 if step is None else step
  idx = p_index(cfg, step)
  changed = idx > state["p_index"]
  n_hist = jnp.minimum(state["hist_count"], cfg.history)
  valid = jnp.arange(cfg.history) < n_hist
  mean_sp = jnp.sum(jnp.where(valid, state["hist_sp"], 0.0))
  mean_spn = jnp.sum(jnp.where(valid, state["hist_sp_next"], 0.0))
  ratio = jnp.where((n_hist > 0) & (mean_spn > 0), mean_sp / jnp.maximum(mean_spn, 1e-30), 1.0)
  c = jnp.where(changed, state["c"] * ratio, state["c"])

  f = dense_activation(params, x)
  xhat = decode(params, f, cfg)
  recon = cv.recon_loss(target, xhat, row_mask)
  p = p_of(cfg, idx)
  sparsity = s_p(f, p, row_mask)
  total = recon + c * sparsity

  sp_next = s_p(sg(f), p_of(cfg, jnp.minimum(idx + 1, cfg.n_p_steps)), row_mask)
  count = jnp.where(changed, 0, state["hist_count"])
  pos = count % cfg.history
  clear = lambda h: jnp.where(changed, jnp.zeros_like(h), h)
  new_state = {
      "tokens_since_fired": cv.update_fired(state["tokens_since_fired"], f, row_mask),
      "c": sg(c), "p_index": idx,
      "hist_sp": clear(state["hist_sp"]).at[pos].set(sg(sparsity)),
      "hist_sp_next": clear(state["hist_sp_next"]).at[pos].set(sp_next),
      "hist_count": count + 1,
  }
  metrics = base.common_metrics(target, xhat, f, new_state, cfg, row_mask)
  metrics.update(loss=total, recon=recon, sparsity=sparsity, p=p, c=c)
  return total, base.LossOutput(metrics, new_state, f)

to_saelens = relu.to_saelens

SPEC = base.FamilySpec(
    name="pannealing", display="P-Annealing", selection="dense", centred=True,
    latent_axes=base.TIED_AXES, saelens_architecture="standard", saelens=to_saelens,
    paper_options={})
