"""Adam with a per-level step count (SPEC 1 optimizer; SPEC 3 level start; docs/speed.md).

The release trains Level 2 with torch's Adam, which keeps a step count per parameter and first
sees a Level-2 gradient at sae2_start_step S: its moments and bias correction start there. One
shared count would divide the first Level-2 moments by 1 - b^(S+1) ~ 1 instead of 1 - b^1, making
the first updates several times larger than the release's. Here every leaf carries a static start
step: before it the leaf's moments stay zero and its update is 0; from it the bias correction
uses t = count - start. With every start 0 this is optax.scale_by_adam (same state type, so the
ZeRO layout and checkpoints do not change).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax


def scale_by_adam_from(start_steps: Callable, b1: float = 0.9, b2: float = 0.999,
                       eps: float = 1e-8) -> optax.GradientTransformation:
  """Adam whose leaf i starts counting at start_steps(params)[i] (static Python ints)."""

  def init_fn(params):
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=zeros,
                                  nu=jax.tree_util.tree_map(jnp.zeros_like, params))

  def update_fn(updates, state, params=None):
    count = optax.safe_int32_increment(state.count)
    starts = start_steps(updates if params is None else params)

    def leaf(g, m, v, s):
      t = count - s                    # this leaf's own step number (1 on its first step)
      on = t >= 1
      m2 = jnp.where(on, b1 * m + (1.0 - b1) * g, m)
      v2 = jnp.where(on, b2 * v + (1.0 - b2) * jnp.square(g), v)
      tf = jnp.maximum(t, 1).astype(jnp.float32)
      m_hat = m2 / (1.0 - b1 ** tf)
      v_hat = v2 / (1.0 - b2 ** tf)
      return jnp.where(on, m_hat / (jnp.sqrt(v_hat) + eps), 0.0).astype(g.dtype), m2, v2

    out = jax.tree_util.tree_map(leaf, updates, state.mu, state.nu, starts)
    treedef = jax.tree_util.tree_structure(updates)
    flat = treedef.flatten_up_to(out)
    new_u = treedef.unflatten([o[0] for o in flat])
    mu = treedef.unflatten([o[1] for o in flat])
    nu = treedef.unflatten([o[2] for o in flat])
    return new_u, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

  return optax.GradientTransformation(init_fn, update_fn)


def level_start_steps(cascade_cfg) -> Callable:
  """start_steps function for a cascade's params (a tuple with one dict per level)."""

  starts = [cascade_cfg.start_step(l) if l else 0 for l in range(cascade_cfg.num_levels)]

  def fn(params):
    return tuple(jax.tree_util.tree_map(lambda _, s=s: s, p) for p, s in zip(params, starts))

  return fn
