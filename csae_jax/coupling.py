"""Scale-free coupling of a cascade's levels (docs/hierarchy_quality.md, "Coupling").

In L = L1 + alpha L2 (SPEC 3) the Level-2 gradient on the Level-1 decoder has a size that depends
on n1, the batch, the live count and the data scale, so one raw alpha is weak at one size and
collapses Level 1 onto the parents at another. Coupling "ratio" instead sets the size of that pull
directly: the Level-l gradient on the level-(l-1) decoder is rescaled, every step, to

    g_up <- alpha_l * ||P g_own|| / ||P g_up|| * g_up

where g_own is the gradient of everything except level l's term on that decoder, g_up the gradient
of level l's term, and P the projection onto the tangent space of the unit-norm rows (what the
optimizer keeps, SPEC 1). alpha_l is then a target ratio of the two (tangent) gradient norms.

Implementation: the level-(l-1) decoder enters its own loss and level l's loss through two copies
made by `split`, a custom VJP whose backward pass sees both cotangents at once. Coupling "raw"
(the paper and the release) uses the same split with scale 1, so the raw ratio is logged either way.
The raw ratio ||P g_up|| / ||P g_own|| comes back as the gradient of a zero "probe" scalar.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

COUPLINGS = ("raw", "ratio")
_TINY = 1e-30


def _tangent_norms(g_a, g_b, w, project: bool):
  """(||P g_a||, ||P g_b||), P the projection onto the tangent space of w's rows, without forming
  P g.

  Per row ||g - (g.w) w||^2 = ||g||^2 - 2 (g.w)^2 + (g.w)^2 ||w||^2. The five row reductions of
  both gradients are one variadic reduction, so g_a, g_b and w are read once (two separate norms
  read w twice: ~10 ms of the paper-shape step; forming P g wrote the (n, d) gradient twice more,
  ~25 ms, docs/speed.md).
  """
  if not project:
    return jnp.linalg.norm(g_a), jnp.linalg.norm(g_b)
  terms = (g_a * g_a, g_a * w, g_b * g_b, g_b * w, w * w)
  zero = jnp.zeros((), g_a.dtype)
  aa, ra, bb, rb, ww = jax.lax.reduce(
      terms, (zero,) * 5, lambda x, y: tuple(u + v for u, v in zip(x, y)), (w.ndim - 1,))

  def norm(sq, r):
    return jnp.sqrt(jnp.maximum(jnp.sum(sq - 2.0 * r * r + r * r * ww), 0.0))

  return norm(aa, ra), norm(bb, rb)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def split(w, probe, target, project: bool):
  """(w, w): the copy used by its own level and the copy fed to the level above.

  target < 0: raw coupling (gradients add unchanged); target >= 0: the level-above gradient is
  rescaled to target x the own-level gradient norm (tangent norms when `project`).
  """
  del probe, target
  return w, w


def _split_fwd(w, probe, target, project):
  del probe
  return (w, w), (w, target)


def _split_bwd(project, res, cts):
  w, target = res
  ct_own, ct_up = cts
  n_own, n_up = _tangent_norms(ct_own, ct_up, w, project)
  raw_ratio = n_up / jnp.maximum(n_own, _TINY)
  scaled = jnp.where(n_up > 0, target * n_own / jnp.maximum(n_up, _TINY), 0.0)
  scale = jnp.where(target < 0, 1.0, scaled)
  return ct_own + scale * ct_up, raw_ratio, jnp.zeros_like(target)


split.defvjp(_split_fwd, _split_bwd)


def split_decoders(params, cfg, probes=None):
  """(params with each lower decoder replaced by its own-level copy, inputs of levels >= 2).

  inputs[l-1] is what level l (0-based l >= 1) reads as data: a copy of level l-1's W_dec.
  """
  params = [dict(p) for p in params]
  inputs = []
  for l in range(1, cfg.num_levels):
    w = params[l - 1]["W_dec"]
    probe = jnp.asarray(0.0, w.dtype) if probes is None else probes[l - 1]
    target = jnp.asarray(cfg.alpha(l) if cfg.coupling == "ratio" else -1.0, w.dtype)
    project = cfg.levels[l - 1].cfg.constrained_decoder()
    own, up = split(w, probe, target, bool(project))
    params[l - 1]["W_dec"] = own
    inputs.append(up)
  return tuple(params), tuple(inputs)


def level_weight(cfg, l: int) -> float:
  """Weight of L_l in the summed loss: alpha_l (raw) or 1 (ratio: alpha_l acts in `split`)."""
  return 1.0 if cfg.coupling == "ratio" else cfg.alpha(l)


def value_and_grad(model, params, state, x, step):
  """((loss, LossOutput), grads) of model.loss; cascades also log the coupling ratios per step.

  Metrics added per level l >= 2: l{l}/coupling_raw_ratio = ||P g_up|| / ||P g_own|| before any
  rescaling, and l{l}/coupling_ratio = the ratio the optimizer receives.
  """
  if not model.is_cascade:
    return jax.value_and_grad(lambda p: model.loss(p, state, x, step=step), has_aux=True)(params)
  from csae_jax import cascade as cascade_lib
  cfg = model.cfg
  probes = jnp.zeros((cfg.num_levels - 1,), jnp.float32)

  def loss_fn(p, pr):
    return cascade_lib.loss(p, state, x, cfg, step=step, probes=pr)

  (loss, out), (grads, raw) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(params,
                                                                                         probes)
  metrics = dict(out.metrics)
  for l in range(1, cfg.num_levels):
    r = raw[l - 1]
    metrics[f"l{l + 1}/coupling_raw_ratio"] = r
    if cfg.coupling == "ratio":
      metrics[f"l{l + 1}/coupling_ratio"] = jnp.where(r > 0, cfg.alpha(l), 0.0)
    else:
      metrics[f"l{l + 1}/coupling_ratio"] = r
  return (loss, out._replace(metrics=metrics)), grads
