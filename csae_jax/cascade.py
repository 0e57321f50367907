"""Cascaded SAE with N >= 2 levels (SPEC section 3), composed from the flat families.

Level 1 is any family on activations. Level l >= 2 is any family whose data points are the atoms
(rows of W_dec) of level l-1, all in R^d. L = L1 + sum_l alpha_l L_l, one optimizer, and by default
gradients of L_l flow into level l-1's decoder.

Dynamic masking keeps shapes static: every level-(l-1) atom is fed with a live mask; the family
ranks only masked rows and divides by max(n_live, 1). Level 2's live atoms are those active on some
token of the batch; level l > 2's are the level-(l-1) atoms that some live level-(l-2) atom activates.
"""
from __future__ import annotations

import dataclasses
import math
import numbers

import jax
import jax.numpy as jnp
from jax import lax

from csae_jax import codes as codes_lib
from csae_jax import compaction as compaction_lib
from csae_jax import conventions as cv
from csae_jax import coupling as coupling_lib
from csae_jax import level_kmeans
from csae_jax.families import base
from csae_jax.families import get_family

sg = lax.stop_gradient

STOP_GRADIENT_MODES = ("full", "partial", "bilateral")
EMPTY_LIVE_MODES = ("skip", "all")


@dataclasses.dataclass(frozen=True)
class Level:
  family: str
  cfg: base.BaseConfig


@dataclasses.dataclass(frozen=True)
class Config:
  levels: tuple[Level, ...]
  alphas: tuple[float, ...] = ()          # one per level >= 2; default 1.0 each
  level_start_steps: tuple[int, ...] = ()  # one per level >= 2; default 0 each
  stop_gradient: str = "full"              # full | partial | bilateral (SPEC 3, Eqs. 34-35)
  empty_live: str = "skip"                 # skip | all: what to do when no atom is live
  compaction: str = "auto"                 # auto | off: levels >= 2 on gathered live atoms
  per_level_adam: bool = True              # Adam count of level l starts at its start step
  live_eps: float = 0.0                    # atom live when active > live_eps on some row
  parent_min: float = 1e-3                 # no parent when the max activation <= this
  parent_rel_min: float = 0.0              # abstain when max activation < this x the median max
  parent_min_children: int = 0             # abstain when the best unit is best for fewer atoms
  parent_min_cos: float = -1.0             # abstain when cos(atom, parent's decoder row) < this
  coupling: str = "raw"                    # raw (SPEC 3) | ratio (alpha = target gradient ratio)
  # Level re-seeding by k-means (level_kmeans.py; not in SPEC 3, off by default): at each level's
  # start step and every reseed_every steps after it, up to step reseed_until, levels >= 2 are
  # replaced by the best of reseed_restarts k-means++ + reseed_iters Lloyd fits of the atoms below.
  reseed_every: int = 0                    # 0 = never (SPEC 3)
  reseed_until: int = 0                    # last step that may re-seed
  reseed_restarts: int = 8
  reseed_iters: int = 20
  # > 0: Level 2's k-means weighs only Level-1 atoms that fired within the last reseed_live_tokens
  # tokens (tokens_since_fired < it; the step passes the model state); 0: every atom.
  reseed_live_tokens: int = 0
  adam_b1: float = 0.9

  @property
  def d(self) -> int:
    return self.levels[0].cfg.d

  @property
  def n(self) -> int:
    return self.levels[0].cfg.n

  @property
  def num_levels(self) -> int:
    return len(self.levels)

  def alpha(self, l: int) -> float:
    return self.alphas[l - 1] if self.alphas else 1.0

  def start_step(self, l: int) -> int:
    return self.level_start_steps[l - 1] if self.level_start_steps else 0

  def validate(self) -> None:
    if len(self.levels) < 2:
      raise ValueError(f"a cascade needs at least 2 levels, got {len(self.levels)}")
    for i, lv in enumerate(self.levels):
      if not get_family(lv.family).SPEC.cascade_level:
        raise ValueError(f"level {i + 1}: {lv.family!r} cannot be a cascade level")
      lv.cfg.validate()
      if lv.cfg.d != self.d:
        raise ValueError(f"level {i + 1} has d={lv.cfg.d} but level 1 has d={self.d}; every "
                         "level lives in the activation space")
    for name, seq in (("alphas", self.alphas), ("level_start_steps", self.level_start_steps)):
      if seq and len(seq) != len(self.levels) - 1:
        raise ValueError(f"{name} needs one value per level >= 2 ({len(self.levels) - 1}), "
                         f"got {len(seq)}")
    for a in self.alphas:
      if isinstance(a, bool) or not isinstance(a, numbers.Real) or not math.isfinite(a) or a < 0:
        raise ValueError(f"alphas must be finite numbers >= 0, got {list(self.alphas)}")
    for s in self.level_start_steps:
      if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0:
        raise ValueError(f"level_start_steps must be integers >= 0, got "
                         f"{list(self.level_start_steps)}")
    if self.stop_gradient not in STOP_GRADIENT_MODES:
      raise ValueError(f"stop_gradient must be one of {STOP_GRADIENT_MODES}, "
                       f"got {self.stop_gradient!r}")
    if self.coupling not in coupling_lib.COUPLINGS:
      raise ValueError(f"coupling must be one of {coupling_lib.COUPLINGS}, got {self.coupling!r}")
    if not isinstance(self.parent_min_children, int) or self.parent_min_children < 0:
      raise ValueError(f"parent_min_children must be an integer >= 0, got "
                       f"{self.parent_min_children!r}")
    if not -1.0 <= self.parent_min_cos <= 1.0:
      raise ValueError(f"parent_min_cos must be in [-1, 1], got {self.parent_min_cos}")
    if not 0.0 <= self.parent_rel_min < 1.0:
      raise ValueError(f"parent_rel_min must be in [0, 1), got {self.parent_rel_min}")
    for name in ("reseed_every", "reseed_until", "reseed_restarts", "reseed_iters",
                 "reseed_live_tokens"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
    if self.reseed_every and (self.reseed_restarts < 1 or self.reseed_iters < 1):
      raise ValueError("reseed_restarts and reseed_iters must be >= 1 when reseed_every > 0")
    if self.compaction not in compaction_lib.COMPACTION_MODES:
      raise ValueError(f"compaction must be one of {compaction_lib.COMPACTION_MODES}, "
                       f"got {self.compaction!r}")
    if self.empty_live not in EMPTY_LIVE_MODES:
      raise ValueError(f"empty_live must be one of {EMPTY_LIVE_MODES}, got {self.empty_live!r}")

  def replace(self, **kw):
    return dataclasses.replace(self, **kw)


def _fam(cfg: Config, l: int):
  return get_family(cfg.levels[l].family)


def init(key, cfg: Config, x_first):
  """Level 1 from the first token batch; level l >= 2 from the initial atoms of level l-1."""
  keys = jax.random.split(key, cfg.num_levels)
  params = []
  data = jnp.asarray(x_first, jnp.float32)
  for l, lv in enumerate(cfg.levels):
    p = get_family(lv.family).init(keys[l], lv.cfg, data)
    params.append(p)
    data = p["W_dec"]
  return tuple(params)


def init_state(cfg: Config):
  return tuple(get_family(lv.family).init_state(lv.cfg) for lv in cfg.levels)


def level_inputs(atoms, mode: str):
  """(input, target) for the level above, per stop-gradient mode (SPEC 3, Eqs. 34-35)."""
  if mode == "full":
    return atoms, atoms
  if mode == "partial":
    return atoms, sg(atoms)
  return sg(atoms), sg(atoms)


def reinit_level_biases(params, cfg: Config, step):
  """At each level's start step, b_dec <- geometric median of the level below's atoms (SPEC 3)."""
  params = list(params)
  for l in range(1, cfg.num_levels):
    start = cfg.start_step(l)
    if start <= 0:
      continue
    below = params[l - 1]["W_dec"]

    def set_bias(p, below=below):
      p = dict(p)
      p["b_dec"] = cv.geometric_median(below)
      return p

    params[l] = lax.cond(jnp.asarray(step) == start, set_bias, lambda p: dict(p), params[l])
  return tuple(params)


def is_reseed_step(cfg: Config, l: int, step):
  """Level l (0-based >= 1) re-seeds at start, start + reseed_every, ... <= reseed_until."""
  step = jnp.asarray(step)
  start = cfg.start_step(l)
  return ((step >= start) & (step <= cfg.reseed_until)
          & ((step - start) % max(cfg.reseed_every, 1) == 0))


def reseed_live(cfg: Config, state):
  """(n1,) 0/1 weights of the Level-1 atoms Level 2's k-means uses, or None (all atoms)."""
  if not cfg.reseed_live_tokens or state is None:
    return None
  return (state[0]["tokens_since_fired"] < cfg.reseed_live_tokens).astype(jnp.float32)


def reseed_levels(params, cfg: Config, step, live=None):
  """k-means re-seeding of levels >= 2 on the atoms below (off when reseed_every = 0).

  Each level uses its family's `reseed` when it has one (vq: Euclidean k-means), else
  level_kmeans.reseed (the spherical k-means of a tied linear level). live: optional (n1,)
  weights of the Level-1 atoms for Level 2's fit (`reseed_live`; the training step passes them).
  """
  if not cfg.reseed_every:
    return params
  params = list(params)
  key = jax.random.fold_in(jax.random.PRNGKey(0), jnp.asarray(step, jnp.uint32))
  for l in range(1, cfg.num_levels):
    below, k = params[l - 1]["W_dec"], jax.random.fold_in(key, l)
    fit = getattr(_fam(cfg, l), "reseed", level_kmeans.reseed)

    def do(p, below=below, k=k, fit=fit, w=live if l == 1 else None):
      return fit(k, p, below, cfg.reseed_restarts, cfg.reseed_iters, w)

    params[l] = lax.cond(is_reseed_step(cfg, l, step), do, lambda p: dict(p), params[l])
  return tuple(params)


def upper_levels(params, state, live, cfg: Config, *, step=None, inputs=None, batch_rows=None):
  """sum_{l>=2} alpha_l L_l given level 1's live atoms (SPEC 3, dynamic masking and N levels).

  Returns (loss, metrics, new states of levels >= 2). Level l's data are level l-1's atoms, or
  inputs[l-1] when given (the coupling's copies, csae_jax.coupling.split_decoders).
  batch_rows (level 1's batch size) bounds the live counts for compaction (compaction.py).
  """
  step_v = jnp.asarray(0 if step is None else step)
  caps = ([()] * cfg.num_levels if cfg.compaction == "off" or batch_rows is None else
          compaction_lib.level_buckets([lv.cfg for lv in cfg.levels], batch_rows))
  total = jnp.asarray(0.0, jnp.float32)
  metrics, new_states = {}, []
  for l in range(1, cfg.num_levels):
    lv = cfg.levels[l]
    atoms = params[l - 1]["W_dec"] if inputs is None else inputs[l - 1]
    n_live = jnp.sum(live, dtype=jnp.int32)
    any_live = n_live > 0
    if cfg.empty_live == "all":
      mask = jnp.where(any_live, live, jnp.ones_like(live))
      term_on = jnp.asarray(True)
    else:
      mask = live
      term_on = any_live
    started = step_v >= cfg.start_step(l)
    x_in, tgt = level_inputs(atoms, cfg.stop_gradient)
    level_loss, lmetrics, lstate, next_live = compaction_lib.run_level(
        get_family(lv.family), params[l], state[l], x_in, tgt, mask, lv.cfg, step=step,
        caps=caps[l - 1], eps=cfg.live_eps)
    on = term_on & started
    total = total + jnp.where(on, coupling_lib.level_weight(cfg, l) * level_loss, 0.0)
    new_states.append(cv.tree_select(started, lstate, state[l]))
    pre = f"l{l + 1}/"
    metrics.update({pre + k: v for k, v in lmetrics.items()})
    metrics[pre + "live_atoms"] = n_live.astype(jnp.float32)
    metrics[pre + "active"] = on.astype(jnp.float32)
    live = next_live & any_live
  return total, metrics, tuple(new_states)


def loss(params, state, x, cfg: Config, *, step=None, row_mask=None, target=None, probes=None):
  """Joint objective L = L1 + sum_l alpha_l L_l (SPEC 3), coupled by cfg.coupling.

  probes: optional (num_levels - 1,) zeros whose gradients are the raw coupling ratios.
  """
  params, inputs = coupling_lib.split_decoders(params, cfg, probes)
  l1, out = _fam(cfg, 0).loss(params[0], state[0], x, cfg.levels[0].cfg, step=step,
                              row_mask=row_mask, target=target)
  live = codes_lib.live_of(out, row_mask, cfg.live_eps)
  upper, metrics, states = upper_levels(params, state, live, cfg, step=step, inputs=inputs,
                                        batch_rows=x.shape[0])
  metrics.update({f"l1/{k}": v for k, v in out.metrics.items()})
  total = l1 + upper
  metrics["loss"] = total
  return total, base.LossOutput(metrics, (out.state,) + states, out.codes)


def encode(params, state, x, cfg: Config):
  return _fam(cfg, 0).encode(params[0], state[0], x, cfg.levels[0].cfg)


def decode(params, codes, cfg: Config):
  return _fam(cfg, 0).decode(params[0], codes, cfg.levels[0].cfg)


def dense_activation(params, x, cfg: Config):
  return _fam(cfg, 0).dense_activation(params[0], x, cfg.levels[0].cfg)


def encode_atoms(params, state, cfg: Config, l: int):
  """Inference codes of level l+1 (0-based l >= 1) on the atoms of level l."""
  return _fam(cfg, l).encode(params[l], state[l], params[l - 1]["W_dec"], cfg.levels[l].cfg)


def parent_maps(params, cfg: Config):
  """pi_l(j) = argmax_r of level l's dense activation on atom j of level l-1; -1 = no parent.

  Returns a tuple with one int32 array per level >= 2 (SPEC 3, N levels; SPEC 4, Parents).
  """
  maps = []
  for l in range(1, cfg.num_levels):
    act = _fam(cfg, l).dense_activation(params[l], params[l - 1]["W_dec"], cfg.levels[l].cfg)
    best = jnp.argmax(act, axis=-1).astype(jnp.int32)
    top = act.max(-1)
    keep = top > cfg.parent_min
    if cfg.parent_rel_min > 0:   # abstention (docs/hierarchy_quality.md): far below typical
      keep &= top >= cfg.parent_rel_min * jnp.median(top)
    if cfg.parent_min_cos > -1.0:     # the atom is too far from its parent's direction
      below, dec = params[l - 1]["W_dec"], params[l]["W_dec"][best]
      cos = jnp.sum(below * dec, -1) / (jnp.linalg.norm(below, axis=-1)
                                         * jnp.linalg.norm(dec, axis=-1) + 1e-12)
      keep &= cos >= cfg.parent_min_cos
    if cfg.parent_min_children > 1:   # a unit that is best for one atom only is not a parent
      counts = jnp.zeros(act.shape[-1], jnp.int32).at[best].add(keep.astype(jnp.int32))
      keep &= counts[best] >= cfg.parent_min_children
    maps.append(jnp.where(keep, best, -1))
  return tuple(maps)


def fold_scale(params, state, s, cfg: Config):
  """Only level 1 sees activations; higher levels are never rescaled (SPEC 1)."""
  p0, s0 = _fam(cfg, 0).fold_scale(params[0], state[0], s, cfg.levels[0].cfg)
  return (p0,) + tuple(params[1:]), (s0,) + tuple(state[1:])
