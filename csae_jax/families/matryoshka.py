"""Matryoshka SAE with one global BatchTopK (SPEC 2.7).

One dictionary split into groups m_1, m_2, ...; prefix t holds the first m_1 + ... + m_t latents.
loss = sum (or mean) over prefixes of the prefix reconstruction error, plus AuxK on the full one.
The prefix reconstructions are running sums of per-group decodes, so the cost is one decode.
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from csae_jax import conventions as cv
from csae_jax.families import base
from csae_jax.families import batchtopk
from csae_jax.families import topk


@dataclasses.dataclass(frozen=True)
class Config(batchtopk.Config):
  group_sizes: tuple[int, ...] = ()
  prefix_reduce: str = "sum"   # "sum" (the paper) or "mean"

  def validate(self):
    super().validate()
    if not self.group_sizes:
      raise ValueError("group_sizes must name at least one group")
    for g in self.group_sizes:
      cv.check_positive("group size", g)
    if sum(self.group_sizes) != self.n:
      raise ValueError(f"group_sizes {self.group_sizes} sum to {sum(self.group_sizes)}, "
                       f"not n={self.n}")
    if self.prefix_reduce not in ("sum", "mean"):
      raise ValueError(f"prefix_reduce must be 'sum' or 'mean', got {self.prefix_reduce!r}")


init = batchtopk.init
init_state = batchtopk.init_state
dense_activation = batchtopk.dense_activation
encode = batchtopk.encode
decode = base.linear_decode
fold_scale = batchtopk.fold_scale


def prefix_reconstructions(params, f, group_sizes):
  """(G, B, d): reconstruction from each prefix of groups."""
  parts, start = [], 0
  for g in group_sizes:
    parts.append(f[:, start:start + g] @ params["W_dec"][start:start + g])
    start += g
  return jnp.cumsum(jnp.stack(parts), axis=0) + params["b_dec"]


def loss(params, state, x, cfg, *, step=None, row_mask=None, target=None):
  target = x if target is None else target
  k = base.annealed_k(cfg, step)
  f, z, keep = batchtopk.encode_batch(params, x, k, row_mask, k_hint=cfg.k)
  recons = prefix_reconstructions(params, f, cfg.group_sizes)
  per_prefix = jnp.stack([cv.recon_loss(target, r, row_mask) for r in recons])
  recon = per_prefix.sum() if cfg.prefix_reduce == "sum" else per_prefix.mean()
  xhat = recons[-1]
  metrics = {}
  total = topk.add_auxk(recon, metrics, params, z, target, xhat, state, cfg)
  new_state = {
      "tokens_since_fired": cv.update_fired(state["tokens_since_fired"], f, row_mask),
      "threshold": base.update_threshold(state["threshold"], z, keep, 0 if step is None else step,
                                         cfg.threshold_start, cfg.threshold_decay),
  }
  metrics.update(base.common_metrics(target, xhat, f, new_state, cfg, row_mask))
  metrics.update(loss=total, recon=recon, k=jnp.asarray(k, jnp.float32),
                 threshold=new_state["threshold"])
  for i, v in enumerate(per_prefix):
    metrics[f"recon_prefix{i}"] = v
  return total, base.LossOutput(metrics, new_state, f)
