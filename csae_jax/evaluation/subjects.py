"""What is evaluated: the Level-1 and Level-2 units of each method (SPEC section 4, Parents).

A Subject turns one evaluated method into pure functions of a token chunk:
  level1(x, valid) -> (codes (B, n1), dense (B, n1), xhat (B, d))
  level2(x, codes1) -> (B, n2) scores whose top-1 is the token's Level-2 unit (co-activation rule)
plus the Level-1 and Level-2 atoms (rows in R^d) and, for cascades, parent maps from parameters.

Kinds: "cascade" (CSAE, N levels; parents by the Level-2 encoder), "pair" (two separate flat SAEs
of sizes n1 and n2), a family whose SPEC.hierarchy is "groups" (Matryoshka: two groups of one
dictionary, order configurable) or "on_codes" (Stacked: f1 is Level 1, f2 is Level 2), with the
family name as kind, and "flat" (one SAE whose parents come from clustering its atoms). Codes are
chosen by the family's SPEC.selection.
Params must be for raw activations (apply the model's fold_scale with the run's input scale first).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jax import lax

from csae_jax import cascade as cascade_lib
from csae_jax import ops
from csae_jax.families import batchtopk
from csae_jax.families import get_family
from csae_jax.families import spec as family_spec
from csae_jax.families import topk
from csae_jax.models import Model

ENCODINGS = ("batch", "threshold")
COACT_SOURCES = ("dense", "codes")


@dataclasses.dataclass
class Subject:
  kind: str
  n1: int
  n2: int | None
  d: int
  level1: Callable
  level2: Callable | None
  atoms1: np.ndarray
  atoms2: np.ndarray | None
  param_parent_maps: tuple | None = None   # cascades: one int array per level >= 2
  level_sizes: tuple = ()                  # cascades: n of every level >= 2
  extra: dict = dataclasses.field(default_factory=dict)


def sparse_decode(codes, w_dec, b_dec, max_active: int):
  """codes @ W_dec + b_dec by gathering each row's `max_active` largest codes (exact).

  A dense decode of sparse codes costs B x n x d; the gather costs B x max_active x d. When some
  row has more than max_active non-zeros the dense product is used instead, so it is always exact.
  """
  n = codes.shape[-1]
  if max_active >= n:
    return codes @ w_dec + b_dec
  vals, idx = lax.top_k(codes, max_active)
  fits = jnp.max(jnp.sum(codes != 0, axis=-1)) <= max_active

  def gathered(_):
    return jnp.einsum("bm,bmd->bd", vals, jnp.take(jnp.asarray(w_dec), idx, axis=0)) + b_dec

  return lax.cond(fits, gathered, lambda _: codes @ w_dec + b_dec, None)


def batch_topk_codes(z, k: int, valid, candidates: int):
  """BatchTopK codes of a chunk: keep the k * n_valid largest entries of z (SPEC 2.3, SPEC 4).

  Exact and fast: the global top-K can only contain each row's largest entries, so rank the
  `candidates` largest of every row (lax.top_k) instead of all n; if some row has all its
  candidates kept (it might have had more), fall back to ranking the whole chunk.
  """
  n = z.shape[-1]
  if candidates >= n:
    return z * batchtopk.batch_select(z, k, row_mask=valid).astype(z.dtype)
  zv = jnp.where(valid[:, None], z, 0.0)
  vals, idx = lax.top_k(zv, candidates)
  cand_valid = jnp.broadcast_to(valid[:, None], vals.shape)
  n_rows = jnp.sum(valid, dtype=jnp.int32)
  keep = ops.topk_mask(vals, n_rows * k, axis=None, valid=cand_valid)
  overflow = jnp.any(jnp.all(keep, axis=-1) & (vals.min(-1) > 0) & valid)

  def from_candidates(_):
    rows = jnp.broadcast_to(jnp.arange(z.shape[0])[:, None], idx.shape)
    return jnp.zeros_like(z).at[rows, idx].set(jnp.where(keep, vals, 0.0))

  def full(_):
    return z * batchtopk.batch_select(z, k, row_mask=valid).astype(z.dtype)

  return lax.cond(overflow, full, from_candidates, None)


def cascade_level_metrics(params, state, cfg) -> list[dict]:
  """FVU, L0 and dead fraction of every level >= 2 on the atoms of the level below (SPEC 1)."""
  from csae_jax import conventions as cv
  out = []
  for l in range(1, cfg.num_levels):
    atoms = params[l - 1]["W_dec"]
    fam = get_family(cfg.levels[l].family)
    codes = cascade_lib.encode_atoms(params, state, cfg, l)
    xhat = fam.decode(params[l], codes, cfg.levels[l].cfg)
    m = {k: float(v) for k, v in cv.recon_metrics(atoms, xhat, codes).items()}
    m["dead_fraction"] = float(1.0 - jnp.mean(jnp.any(codes > 0, axis=0)))
    m["level"] = l + 1
    out.append(m)
  return out


def _flat_level1(name: str, cfg, params, state, encoding: str):
  """(codes, dense, xhat) of one flat family; BatchTopK families rank over the chunk by default.

  The dense activation is computed once and the codes derived from it where the family allows.
  """
  fam = get_family(name)
  selection = fam.SPEC.selection
  k = getattr(cfg, "k", None)

  def fn(x, valid):
    dense = fam.dense_activation(params, x, cfg)
    if selection == "batch_topk" and encoding == "batch":
      codes = batch_topk_codes(dense, cfg.k, valid, min(4 * cfg.k, cfg.n))
    elif selection == "batch_topk":
      theta = jnp.maximum(state["threshold"], 0.0)
      codes = lax.cond(state["threshold"] >= 0,
                       lambda _: dense * (dense > theta).astype(dense.dtype),
                       lambda _: batch_topk_codes(dense, cfg.k, valid, min(4 * cfg.k, cfg.n)),
                       None)
    elif selection == "row_topk":
      codes = dense * ops.row_topk_mask(dense, cfg.k).astype(dense.dtype)
    elif selection == "dense":
      codes = dense
    else:
      codes = fam.encode(params, state, x, cfg)
    codes = jnp.where(valid[:, None], codes, 0.0)
    if k is not None and fam.SPEC.k_sparse:
      xhat = sparse_decode(codes, params["W_dec"], params["b_dec"], min(4 * k, cfg.n))
    else:
      xhat = fam.decode(params, codes, cfg)
    return codes, dense, xhat

  return fn


def _check_options(encoding, coact_source):
  if encoding not in ENCODINGS:
    raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
  if coact_source not in COACT_SOURCES:
    raise ValueError(f"coact_source must be one of {COACT_SOURCES}, got {coact_source!r}")


def _np(a):
  return np.asarray(jax.device_get(a), np.float32)


def from_model(model: Model, params, state, *, model2: Model | None = None, params2=None,
               state2=None, encoding: str = "batch", coact_source: str = "dense",
               matryoshka_groups: tuple[int, int] = (0, 1)) -> Subject:
  """The Subject of one trained method (params already folded for raw activations)."""
  _check_options(encoding, coact_source)
  if model.is_cascade:
    cfg = model.cfg
    lv1 = cfg.levels[0]
    level1 = _flat_level1(lv1.family, lv1.cfg, params[0], state[0], encoding)
    maps = tuple(np.asarray(m, np.int64) for m in cascade_lib.parent_maps(params, cfg))
    return Subject("cascade", cfg.n, cfg.levels[1].cfg.n, cfg.d, level1, None,
                   _np(params[0]["W_dec"]), _np(params[1]["W_dec"]), maps,
                   tuple(lv.cfg.n for lv in cfg.levels[1:]),
                   {"level_recon": cascade_level_metrics(params, state, cfg)})
  name, cfg = model.name, model.cfg
  hierarchy = family_spec(name).hierarchy
  if hierarchy == "groups":
    return _groups(name, cfg, params, state, encoding, coact_source, matryoshka_groups)
  if hierarchy == "on_codes":
    return _stacked(name, cfg, params, coact_source)
  level1 = _flat_level1(name, cfg, params, state, encoding)
  if model2 is None:
    return Subject("flat", cfg.n, None, cfg.d, level1, None, _np(params["W_dec"]), None)
  if model2.d != model.d:
    raise ValueError(f"the Level-2 SAE has d={model2.d} but the Level-1 SAE has d={model.d}")
  if model2.is_cascade or family_spec(model2.name).hierarchy != "flat":
    raise ValueError(f"the Level-2 SAE of a flat pair must be a flat family, got {model2.name!r}")
  l2_first = _flat_level1(model2.name, model2.cfg, params2, state2, encoding)
  fam2 = get_family(model2.name)

  def level2(x, codes1):
    del codes1
    if coact_source == "dense":
      return fam2.dense_activation(params2, x, model2.cfg)
    return l2_first(x, jnp.ones(x.shape[0], bool))[0]

  return Subject("pair", cfg.n, model2.n, cfg.d, level1, level2, _np(params["W_dec"]),
                 _np(params2["W_dec"]))


def _groups(name, cfg, params, state, encoding, coact_source, groups):
  """Two groups of one nested dictionary (Matryoshka) as Level 1 and Level 2."""
  sizes = cfg.group_sizes
  if len(sizes) < 2:
    raise ValueError(f"Matryoshka needs two groups to form two levels, got group_sizes={sizes}")
  g1, g2 = groups
  for g in groups:
    if not 0 <= g < len(sizes):
      raise ValueError(f"matryoshka group index {g} out of range for group_sizes={sizes}")
  if g1 == g2:
    raise ValueError(f"matryoshka_groups must name two different groups, got {groups}")
  starts = np.concatenate([[0], np.cumsum(sizes)])
  s1 = slice(int(starts[g1]), int(starts[g1 + 1]))
  s2 = slice(int(starts[g2]), int(starts[g2 + 1]))
  full = _flat_level1(name, cfg, params, state, encoding)

  def level1(x, valid):
    codes, dense, xhat = full(x, valid)
    return codes[:, s1], dense[:, s1], xhat

  def level2(x, codes1):
    del codes1
    if coact_source == "dense":
      return get_family(name).dense_activation(params, x, cfg)[:, s2]
    return full(x, jnp.ones(x.shape[0], bool))[0][:, s2]

  w = _np(params["W_dec"])
  return Subject(name, sizes[g1], sizes[g2], cfg.d, level1, level2, w[s1], w[s2],
                 extra={"level1_slice": (s1.start, s1.stop), "level2_slice": (s2.start, s2.stop)})


def _stacked(name, cfg, params, coact_source):
  """A TopK SAE on the codes of another (Stacked): f1 is Level 1, f2 Level 2."""
  p1, p2 = params["sae1"], params["sae2"]

  def level1(x, valid):
    codes, dense = topk.encode_with_k(p1, x, cfg.k)
    codes = jnp.where(valid[:, None], codes, 0.0)
    return codes, dense, sparse_decode(codes, p1["W_dec"], p1["b_dec"], min(4 * cfg.k, cfg.n))

  def level2(x, codes1):
    del x
    if coact_source == "dense":
      return topk.dense_activation(p2, codes1)
    return topk.encode_with_k(p2, codes1, cfg.k2)[0]

  # A Level-2 atom lives in code space; its image in R^d is h1 applied without the bias.
  atoms2 = _np(p2["W_dec"] @ p1["W_dec"])
  return Subject(name, cfg.n, cfg.n2, cfg.d, level1, level2, _np(p1["W_dec"]), atoms2)


