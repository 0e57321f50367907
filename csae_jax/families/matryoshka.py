"""Matryoshka SAE with one global BatchTopK (SPEC 2.7).

One dictionary split into groups m_1, m_2, ...; prefix t holds the first m_1 + ... + m_t latents.
loss = sum (or mean) over prefixes of the prefix reconstruction error, plus AuxK on the full one.
The prefix reconstructions are running sums of per-group decodes, so the cost is one decode.
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from csae_jax import conventions as cv
from csae_jax import sparse
from csae_jax.families import base
from csae_jax.families import batchtopk


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


def _prefix_losses(recons, target, row_mask, cfg):
  per_prefix = jnp.stack([cv.recon_loss(target, r, row_mask) for r in recons])
  recon = per_prefix.sum() if cfg.prefix_reduce == "sum" else per_prefix.mean()
  return recon, recons[-1], {f"recon_prefix{i}": v for i, v in enumerate(per_prefix)}


def _reconstruct(params, f, target, row_mask, cfg):
  return _prefix_losses(prefix_reconstructions(params, f, cfg.group_sizes), target, row_mask, cfg)


def _reconstruct_entries(params, entries, target, row_mask, cfg):
  recons = sparse.decode_prefixes(params, *entries, target.shape[0], cfg.group_sizes)
  return _prefix_losses(recons, target, row_mask, cfg)


def loss(params, state, x, cfg, *, step=None, row_mask=None, target=None):
  return batchtopk.batch_loss(params, state, x, cfg, _reconstruct, step=step, row_mask=row_mask,
                              target=target, sparse_reconstruct=_reconstruct_entries)


def to_saelens(cfg, params, state) -> base.SAELensLevel:
  """BatchTopK's JumpReLU form; the group boundaries go in the metadata (matryoshka_widths)."""
  level = batchtopk.to_saelens(cfg, params, state)
  widths = [int(w) for w in np.cumsum(cfg.group_sizes)]
  return level._replace(metadata={**level.metadata, "matryoshka_widths": widths})


SPEC = base.FamilySpec(
    name="matryoshka", display="Matryoshka", selection="batch_topk", centred=True,
    latent_axes=base.TIED_AXES, hierarchy="groups",
    saelens_architecture="jumprelu", saelens=to_saelens)
