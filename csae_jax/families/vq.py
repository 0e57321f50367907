"""Vector quantisation (one-hot, Euclidean k-means) SAE: each row is coded by its nearest centre.

Not a family of the paper (SPEC 2); it exists as a cascade Level 2 whose objective is Euclidean
k-means of the level-below atoms (docs/hierarchy_quality.md, "Euclidean Level 2 (vq family)").

Params: centres relative to an origin, W_dec (n, d) (NOT unit norm: constrained_decoder() is
False), and the origin b_dec (d,) (the geometric median of the first batch / of the level-below
atoms at the level's start step, SPEC 3; the loss does not train it). Centre r is b_dec + W_dec[r].

  score      s_r(x) = W_dec[r] . (x - b_dec) - ||W_dec[r]||^2 / 2
             = (||x - b_dec||^2 - ||x - b_dec - W_dec[r]||^2) / 2, so argmax_r s_r is the nearest
             centre: an encoder column W_dec[r] with bias -||W_dec[r]||^2 / 2 (SPEC 4's argmax rule)
  code       one-hot, value `scale` on r* = argmax_r s_r (state["scale"]: 1 in training;
             fold_scale multiplies it, and the scores then read (x - b_dec) / scale)
  decode     codes @ W_dec + b_dec (the centre)
  dense act. ReLU(s_r - max_{q != r} s_q): half the margin ||x - c_q||^2 - ||x - c_r||^2 to the
             runner-up, positive only for the nearest centre, so the cascade's parent rule
             (argmax of the dense activation, > parent_min) names the nearest centre; an atom
             (nearly) equidistant from two centres has no parent
  loss       masked mean of ||t_j - c_{r_j}||^2 (the other families' reconstruction term, with
             r_j held fixed): the k-means objective on the masked rows; gradients reach the
             centres and, through t and x, the level below (stop-gradient modes as for every level)

`reseed` is the Euclidean analogue of level_kmeans.reseed (Lloyd + k-means++ on the atoms below,
weighted by a live mask), which cascade.reseed_levels calls for a level whose family defines it.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from csae_jax import codes as codes_lib
from csae_jax import conventions as cv
from csae_jax import level_kmeans
from csae_jax.families import base

sg = jax.lax.stop_gradient


@dataclasses.dataclass(frozen=True)
class Config(base.BaseConfig):

  def constrained_decoder(self) -> bool:
    return False


def init(key, cfg: Config, x_first=None):
  """Centres on n distinct rows of x_first (Forgy init) around its geometric median; random
  small centres when there is no batch. With fewer rows than n, rows repeat with a small jitter."""
  k_pick, k_noise = jax.random.split(key)
  if x_first is None:
    w = jax.random.normal(k_noise, (cfg.n, cfg.d), jnp.float32) / jnp.sqrt(cfg.d)
    return {"W_dec": w, "b_dec": jnp.zeros((cfg.d,), jnp.float32)}
  x = jnp.asarray(x_first, jnp.float32)
  b = cv.geometric_median(x)
  rows = x.shape[0]
  if rows >= cfg.n:
    w = x[jax.random.permutation(k_pick, rows)[:cfg.n]] - b
  else:
    w = x[jax.random.randint(k_pick, (cfg.n,), 0, rows)] - b
    w = w + 0.01 * (jnp.std(x) + 1e-6) * jax.random.normal(k_noise, w.shape)
  return {"W_dec": w, "b_dec": b}


def init_state(cfg: Config):
  return dict(base.dead_state(cfg), scale=jnp.ones((), jnp.float32))


def scores(params, x, scale=1.0):
  """s_r = W_dec[r] . (x - b_dec) / scale - ||W_dec[r]||^2 / 2, (B, n)."""
  w = params["W_dec"]
  return (base.centered_matmul(x, params["b_dec"], w.T) / scale) - 0.5 * jnp.sum(w * w, -1)


def nearest(params, x, scale=1.0):
  return jnp.argmax(scores(params, x, scale), axis=-1)


def encode(params, state, x, cfg: Config):
  scale = state["scale"]
  return scale * jax.nn.one_hot(nearest(params, x, scale), cfg.n, dtype=jnp.float32)


decode = base.linear_decode


def dense_activation(params, x, cfg=None):
  s = scores(params, x)
  if s.shape[-1] == 1:
    return jnp.ones_like(s)
  top2 = jax.lax.top_k(s, 2)[0]
  runner_up = jnp.where(s >= top2[:, :1], top2[:, 1:2], top2[:, :1])
  return jax.nn.relu(s - runner_up)


def loss(params, state, x, cfg: Config, *, step=None, row_mask=None, target=None):
  del step
  target = x if target is None else target
  r = sg(nearest(params, x))
  codes = jax.nn.one_hot(r, cfg.n, dtype=jnp.float32)
  xhat = params["W_dec"][r] + sg(params["b_dec"])
  recon = cv.recon_loss(target, xhat, row_mask)
  new_state = dict(state, tokens_since_fired=cv.update_fired(state["tokens_since_fired"], codes,
                                                             row_mask))
  metrics = base.common_metrics(target, xhat, codes, new_state, cfg, row_mask)
  metrics.update(loss=recon, recon=recon)
  return recon, base.LossOutput(metrics, new_state, codes, codes_lib.active(codes, row_mask))


def fold_scale(params, state, s, cfg=None):
  """Raw activations x_raw = s x: the origin and the codes' value scale by s, so the raw centre
  r is s b_dec + s W_dec[r] (W_dec is kept; the scores divide x - b_dec by the scale)."""
  return dict(params, b_dec=params["b_dec"] * s), dict(state, scale=state["scale"] * s)


def reseed(key, params, atoms, restarts: int, iters: int, w=None):
  """W_dec = the best of `restarts` Euclidean k-means++ + `iters` Lloyd fits of atoms - b_dec
  (atoms weighted by w, e.g. a 0/1 live mask); b_dec kept."""
  x = atoms - params["b_dec"]
  centres, _ = level_kmeans.fit(key, x, params["W_dec"].shape[0], restarts, iters, w,
                                level_kmeans.EUCLIDEAN)
  return dict(params, W_dec=centres.astype(params["W_dec"].dtype))


SPEC = base.FamilySpec(
    name="vq", display="VQ", selection="nearest", centred=True,
    latent_axes={"W_dec": base.Latent(0), "b_dec": None}, table1=False)
