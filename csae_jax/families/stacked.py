"""Stacked SAE (SPEC 2.8): a TopK SAE on the codes of another TopK SAE.

f1 = g1(x) (n1 latents, k1); f2 = g2(f1) (n2 latents, k2 < k1); f1hat = h2(f2); xhat = h1(f1hat).
loss = ||x - h1(h2(g2(g1(x))))||^2 + ||x - h1(f1)||^2 + ||f1 - f1hat||^2, each term switchable.
Composes the TopK family twice: params {"sae1": TopK params (d -> n1), "sae2": TopK (n1 -> n2)}.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from csae_jax import conventions as cv
from csae_jax.families import base
from csae_jax.families import topk


@dataclasses.dataclass(frozen=True)
class Config(base.BaseConfig):
  k: int = 32          # k1, for n = n1 latents
  n2: int = 64
  k2: int = 4
  use_full: bool = True
  use_level1: bool = True
  use_level2: bool = True

  def validate(self):
    super().validate()
    cv.check_k("k", self.k, self.n)
    cv.check_positive("n2", self.n2)
    cv.check_k("k2", self.k2, self.n2, "n2")
    if not (self.use_full or self.use_level1 or self.use_level2):
      raise ValueError("stacked: at least one loss term must be enabled")

  def level_configs(self):
    return (topk.Config(d=self.d, n=self.n, k=self.k, aux_k=None),
            topk.Config(d=self.n, n=self.n2, k=self.k2, aux_k=None))


def init(key, cfg, x_first=None):
  c1, c2 = cfg.level_configs()
  k1, k2 = jax.random.split(key)
  p1 = topk.init(k1, c1, x_first)
  f1_first = None if x_first is None else topk.encode_with_k(p1, jnp.asarray(x_first), cfg.k)[0]
  return {"sae1": p1, "sae2": topk.init(k2, c2, f1_first)}


def init_state(cfg):
  return {"tokens_since_fired": jnp.zeros((cfg.n,), jnp.int32),
          "tokens_since_fired_2": jnp.zeros((cfg.n2,), jnp.int32)}


def encode_levels(params, x, cfg):
  f1 = topk.encode_with_k(params["sae1"], x, cfg.k)[0]
  f2 = topk.encode_with_k(params["sae2"], f1, cfg.k2)[0]
  return f1, f2


def encode(params, state, x, cfg):
  del state
  return encode_levels(params, x, cfg)[0]


def dense_activation(params, x, cfg=None):
  return topk.dense_activation(params["sae1"], x)


def decode(params, codes, cfg=None):
  return base.linear_decode(params["sae1"], codes)


def loss(params, state, x, cfg, *, step=None, row_mask=None, target=None):
  target = x if target is None else target
  f1, f2 = encode_levels(params, x, cfg)
  f1hat = base.linear_decode(params["sae2"], f2)
  x_full = base.linear_decode(params["sae1"], f1hat)
  x_l1 = base.linear_decode(params["sae1"], f1)
  terms = {"recon_full": cv.recon_loss(target, x_full, row_mask),
           "recon_level1": cv.recon_loss(target, x_l1, row_mask),
           "recon_level2": cv.recon_loss(f1, f1hat, row_mask)}
  use = {"recon_full": cfg.use_full, "recon_level1": cfg.use_level1,
         "recon_level2": cfg.use_level2}
  total = sum(v for name, v in terms.items() if use[name])
  new_state = {
      "tokens_since_fired": cv.update_fired(state["tokens_since_fired"], f1, row_mask),
      "tokens_since_fired_2": cv.update_fired(state["tokens_since_fired_2"], f2, row_mask)}
  metrics = base.common_metrics(target, x_l1, f1, new_state, cfg, row_mask)
  l2 = cv.recon_metrics(f1, f1hat, f2, row_mask)
  metrics.update({f"level2_{k}": v for k, v in l2.items()})
  metrics["level2_dead_fraction"] = cv.dead_fraction(new_state["tokens_since_fired_2"],
                                                     cfg.dead_tokens)
  metrics["fvu_full"] = cv.recon_metrics(target, x_full, f1, row_mask)["fvu"]
  metrics.update(terms)
  metrics["loss"] = total
  return total, base.LossOutput(metrics, new_state, f1)


def fold_scale(params, state, s, cfg=None):
  """Only the first SAE sees raw activations; the second sees codes, which scale by s too."""
  p1, _ = base.fold_linear_scale(params["sae1"], {}, s)
  p2, _ = base.fold_linear_scale(params["sae2"], {}, s)
  return {"sae1": p1, "sae2": p2}, dict(state)


SPEC = base.FamilySpec(
    name="stacked", display="Stacked", selection="row_topk", centred=True,
    latent_axes={"sae1": base.TIED_AXES,
                 "sae2": {"W_enc": base.Latent(1, "n2"), "b_enc": base.Latent(0, "n2"),
                          "W_dec": base.Latent(0, "n2"), "b_dec": None}},
    hierarchy="on_codes", cascade_level=False)
