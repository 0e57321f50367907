"""Conventions every SAE family shares (SPEC section 1).

Parameter layout, the same for every family (and SAELens's orientation):
  W_enc (d, n), b_enc (n,), W_dec (n, d) whose ROW j is atom j, b_dec (d,).
Codes are (B, n); reconstructions are codes @ W_dec + b_dec.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from csae_jax import codes as codes_lib
from csae_jax import optim

EPS_NORM = 1e-8


# ----------------------------------------------------------------------------- validation
def check_positive(name: str, value) -> None:
  if not isinstance(value, (int, np.integer)) or value <= 0:
    raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_k(name: str, k, n: int, n_name: str = "n") -> None:
  check_positive(name, k)
  if k > n:
    raise ValueError(f"{name}={k} is larger than the dictionary size {n_name}={n}")


def check_activations(x, d: int, name: str = "activations") -> None:
  """Boundary check for data entering a model: rank, width, dtype, finiteness."""
  shape = getattr(x, "shape", None)
  if shape is None or len(shape) != 2:
    raise ValueError(f"{name} must be a 2-D array [tokens, d], got shape {shape}")
  if shape[1] != d:
    raise ValueError(f"{name} have dimension {shape[1]} but the model expects d={d}")
  dtype = np.dtype(getattr(x, "dtype", np.float32))
  if not (np.issubdtype(dtype, np.floating) or dtype.name == "bfloat16"):
    raise ValueError(f"{name} must be floating point, got dtype {dtype}")
  finite = bool(jnp.all(jnp.isfinite(jnp.asarray(x))))
  if not finite:
    arr = np.asarray(jnp.asarray(x, jnp.float32))
    bad = np.argwhere(~np.isfinite(arr))
    raise ValueError(f"{name} contain NaN/Inf ({len(bad)} values, first at row {bad[0][0]}, "
                     f"column {bad[0][1]})")


# ----------------------------------------------------------------------------- init
def unit_rows(w: jax.Array) -> jax.Array:
  """Divide each row (atom) by its norm + eps."""
  return w / (jnp.linalg.norm(w, axis=-1, keepdims=True) + EPS_NORM)


def init_tied(key: jax.Array, d: int, n: int) -> dict[str, jax.Array]:
  """Random unit atoms, W_enc = W_dec^T, zero biases (SPEC 1, Init)."""
  w_dec = unit_rows(jax.random.normal(key, (n, d), jnp.float32))
  return {"W_enc": w_dec.T, "b_enc": jnp.zeros((n,), jnp.float32),
          "W_dec": w_dec, "b_dec": jnp.zeros((d,), jnp.float32)}


def geometric_median(points: jax.Array, weights: jax.Array | None = None,
                     max_iter: int = 100, tol: float = 1e-5) -> jax.Array:
  """Weiszfeld: start at the (weighted) mean, <= max_iter steps, stop when the move < tol."""
  points = points.astype(jnp.float32)
  w = jnp.ones(points.shape[0], jnp.float32) if weights is None else weights.astype(jnp.float32)
  start = (w[:, None] * points).sum(0) / jnp.maximum(w.sum(), EPS_NORM)

  def cond(c):
    i, _, move = c
    return (i < max_iter) & (move >= tol)

  def body(c):
    i, y, _ = c
    dist = jnp.linalg.norm(points - y, axis=-1)
    inv = w / jnp.maximum(dist, EPS_NORM)
    y_new = (inv[:, None] * points).sum(0) / jnp.maximum(inv.sum(), EPS_NORM)
    return i + 1, y_new, jnp.linalg.norm(y_new - y)

  _, y, _ = jax.lax.while_loop(cond, body, (0, start, jnp.array(jnp.inf, jnp.float32)))
  return y


# ----------------------------------------------------------------------------- optimizer
def is_decoder_path(path) -> bool:
  last = path[-1]
  return getattr(last, "key", None) == "W_dec"


def decoder_mask(params, constrained: bool = True):
  """Pytree of bools marking unit-norm decoder matrices (every W_dec of every level)."""
  return jax.tree_util.tree_map_with_path(lambda p, _: constrained and is_decoder_path(p), params)


def project_decoder_grads(mask_fn) -> optax.GradientTransformation:
  """g_j <- g_j - (g_j . w_j) w_j for each decoder row (SPEC 1): keeps steps tangent to the sphere."""

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("project_decoder_grads needs params")
    mask = mask_fn(params)

    def proj(g, w, m):
      if not m:
        return g
      return g - jnp.sum(g * w, axis=-1, keepdims=True) * w

    return jax.tree_util.tree_map(proj, updates, params, mask), state

  return optax.GradientTransformation(init_fn, update_fn)


def renormalize_decoders(params, mask):
  return jax.tree_util.tree_map(lambda w, m: unit_rows(w) if m else w, params, mask)


def default_lr(n: int) -> float:
  """lr = 2e-4 / sqrt(n / 2^14) (SPEC 1)."""
  return 2e-4 / math.sqrt(n / 2 ** 14)


def lr_schedule(peak: float, total_steps: int, warmup_steps: int = 1000,
                decay_start_frac: float = 0.8) -> optax.Schedule:
  """Linear warm-up, constant, then linear decay to 0 from decay_start_frac x total steps."""
  warmup_steps = max(0, min(warmup_steps, total_steps))
  decay_start = max(warmup_steps, int(decay_start_frac * total_steps))
  decay_len = max(1, total_steps - decay_start)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warm = jnp.where(warmup_steps > 0, jnp.minimum(1.0, (step + 1) / max(warmup_steps, 1)), 1.0)
    decay = jnp.clip((total_steps - step) / decay_len, 0.0, 1.0)
    return peak * jnp.minimum(warm, jnp.where(step >= decay_start, decay, 1.0))

  return schedule


def make_optimizer(schedule, mask_fn, *, b1: float = 0.9, b2: float = 0.999,
                   clip_norm: float = 1.0, start_steps=None,
                   eps: float = 1e-8) -> optax.GradientTransformation:
  """Projection -> global clip -> Adam -> lr (SPEC 1); renormalise with renormalize_decoders.

  start_steps(params) -> pytree of ints: per-leaf Adam start (csae_jax/optim.py); None: all 0.
  """
  adam = (optax.scale_by_adam(b1=b1, b2=b2, eps=eps) if start_steps is None
          else optim.scale_by_adam_from(start_steps, b1=b1, b2=b2, eps=eps))
  return optax.chain(project_decoder_grads(mask_fn), clip_by_global_norm(clip_norm),
                     adam, optax.scale_by_learning_rate(schedule))


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
  """optax.clip_by_global_norm with the rescale as one multiply by a scalar.

  optax divides every element by the norm; XLA:CPU treats an elementwise divide as expensive and
  writes the clipped gradient out once for its consumers (Adam's mu and nu), an extra write and
  read of every gradient per step. A multiply is fused into each consumer instead. The factor
  max_norm / norm differs from (g / norm) * max_norm by float32 round-off.
  """

  def update_fn(updates, state, params=None):
    del params
    g_norm = optax.global_norm(updates)
    scale = jnp.where(g_norm < max_norm, 1.0, max_norm / g_norm)
    return jax.tree_util.tree_map(lambda t: t * scale.astype(t.dtype), updates), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)


# ----------------------------------------------------------------------------- scaling
def estimate_input_scale(batches) -> float:
  """s with s^2 = E||x||^2 over the given batches (SPEC 1, Input scaling)."""
  total, count = 0.0, 0
  for x in batches:
    x = np.asarray(x, np.float64)
    total += float((x * x).sum())
    count += x.shape[0]
  if count == 0:
    raise ValueError("estimate_input_scale got no tokens")
  s = math.sqrt(total / count)
  if not math.isfinite(s) or s <= 0:
    raise ValueError(f"input scale must be positive and finite, got {s}")
  return s


# ----------------------------------------------------------------------------- losses, metrics
def masked_mean(v: jax.Array, row_mask: jax.Array | None) -> jax.Array:
  """Mean over rows; with a mask, the sum over masked rows / max(n_masked, 1) (SPEC 3)."""
  if row_mask is None:
    return jnp.mean(v)
  m = row_mask.astype(v.dtype)
  return jnp.sum(v * m) / jnp.maximum(jnp.sum(m), 1.0)


def sq_err(target: jax.Array, xhat: jax.Array) -> jax.Array:
  """Per-row squared L2 error summed over d."""
  return jnp.sum(jnp.square(target - xhat), axis=-1)


def recon_loss(target, xhat, row_mask=None) -> jax.Array:
  return masked_mean(sq_err(target, xhat), row_mask)


def recon_metrics(target, xhat, codes, row_mask=None) -> dict[str, jax.Array]:
  """FVU, explained variance and mean L0 over (masked) rows (SPEC 1, Metrics)."""
  m = jnp.ones(target.shape[0], target.dtype) if row_mask is None else row_mask.astype(target.dtype)
  nrows = jnp.maximum(m.sum(), 1.0)
  mean = (m[:, None] * target).sum(0) / nrows
  resid = (m * sq_err(target, xhat)).sum()
  total = (m * jnp.sum(jnp.square(target - mean), -1)).sum()
  fvu = resid / jnp.maximum(total, 1e-12)
  l0 = codes_lib.l0_sum(codes, m) / nrows
  return {"fvu": fvu, "explained_variance": 1.0 - fvu, "l0": l0}


def update_fired(tokens_since_fired: jax.Array, codes: jax.Array, row_mask=None,
                 cap: int = 2 ** 30) -> jax.Array:
  """Counter of tokens since each latent last fired; reset to 0 where it fired in this batch.

  codes: dense (B, n) or csae_jax.codes.Entries."""
  if row_mask is None:
    ntok = codes.shape[0]
  else:
    ntok = jnp.sum(row_mask, dtype=jnp.int32)
  fired = codes_lib.active(codes, row_mask)
  return jnp.where(fired, 0, jnp.minimum(tokens_since_fired + ntok, cap)).astype(jnp.int32)


def dead_fraction(tokens_since_fired: jax.Array, window: int) -> jax.Array:
  return jnp.mean((tokens_since_fired >= window).astype(jnp.float32))


def tree_select(pred, on_true, on_false):
  return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


Params = dict[str, Any]
