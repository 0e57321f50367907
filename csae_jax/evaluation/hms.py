"""Prototypes and Hierarchical Mono-Semanticity (SPEC section 4), vectorised in NumPy float64.

The prototype R_j of a Level-1 unit is the activation-weighted mean of reference image embeddings
(min-max weights per unit, uniform when the unit's range is <= 1e-8), L2-normalised. HMS(r) is the
mean pairwise cosine of the prototypes of r's children; the sum over pairs uses
sum_{u != v} R_u . R_v = ||sum_u R_u||^2 - sum_u ||R_u||^2, so no loop over units or pairs.
"""
from __future__ import annotations

import numpy as np

RANGE_EPS = 1e-8     # SPEC 4: uniform weights when max - min <= this
WEIGHT_EPS = 1e-8    # SPEC 4: R_j = sum_i a_ij E_i / (sum_i a_ij + 1e-8)
NORM_EPS = 1e-12


def minmax_weights(v: np.ndarray) -> np.ndarray:
  """a_ij = (v_ij - min_i v_ij) / (max_i - min_i); uniform 1 for units with range <= 1e-8."""
  v = np.asarray(v, np.float64)
  if v.ndim != 2 or v.shape[0] == 0:
    raise ValueError(f"image-level codes must be [n_images > 0, n_units], got shape {v.shape}")
  lo = v.min(0)
  rng = v.max(0) - lo
  flat = rng <= RANGE_EPS
  a = (v - lo) / np.where(flat, 1.0, rng)
  a[:, flat] = 1.0
  return a


def unit_rows(r: np.ndarray) -> np.ndarray:
  norm = np.linalg.norm(r, axis=-1, keepdims=True)
  return r / np.maximum(norm, NORM_EPS)


def prototypes(v: np.ndarray, embeddings: np.ndarray, block: int = 4096) -> np.ndarray:
  """R (n_units, e) float32 from image codes v (n_images, n_units) and embeddings E (n_images, e).

  Processes units in column blocks so memory stays O(n_images x block) beyond v itself.
  """
  v = np.asarray(v)
  e = np.asarray(embeddings, np.float64)
  if e.ndim != 2 or e.shape[0] != v.shape[0]:
    raise ValueError(f"embeddings must be [n_images={v.shape[0]}, e], got shape {e.shape}")
  if not np.all(np.isfinite(e)):
    raise ValueError("reference embeddings contain NaN/Inf")
  out = np.empty((v.shape[1], e.shape[1]), np.float32)
  for s in range(0, v.shape[1], block):  # a loop over blocks of units, each block vectorised
    a = minmax_weights(v[:, s:s + block])
    r = (a.T @ e) / (a.sum(0)[:, None] + WEIGHT_EPS)
    out[s:s + block] = unit_rows(r)
  return out


def segment_sum(values: np.ndarray, segment: np.ndarray, num_segments: int) -> np.ndarray:
  """sum of rows of `values` per segment id; ids outside [0, num_segments) are dropped."""
  values = np.asarray(values, np.float64)
  segment = np.asarray(segment, np.int64)
  keep = (segment >= 0) & (segment < num_segments)
  out = np.zeros((num_segments,) + values.shape[1:], np.float64)
  if not keep.any():
    return out
  seg, val = segment[keep], values[keep]
  order = np.argsort(seg, kind="stable")
  seg, val = seg[order], val[order]
  starts = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])
  out[seg[starts]] = np.add.reduceat(val, starts, axis=0)
  return out


def hms_per_parent(r: np.ndarray, parent: np.ndarray, n_parents: int) -> tuple[np.ndarray, np.ndarray]:
  """(hms (n_parents,) with NaN where fewer than 2 children, child counts (n_parents,)).

  r: (n_units, e) prototypes (normalised here, so cos = dot); parent: (n_units,) int, -1 = none.
  """
  r = unit_rows(np.asarray(r, np.float64))
  parent = np.asarray(parent, np.int64)
  if parent.shape != (r.shape[0],):
    raise ValueError(f"parent map has shape {parent.shape}, expected ({r.shape[0]},)")
  if n_parents <= 0:
    raise ValueError(f"n_parents must be positive, got {n_parents}")
  if parent.size and parent.max() >= n_parents:
    raise ValueError(f"parent map refers to unit {parent.max()} but there are {n_parents} parents")
  s = segment_sum(r, parent, n_parents)
  sq = segment_sum(np.sum(r * r, -1), parent, n_parents)
  count = segment_sum(np.ones(len(parent)), parent, n_parents).astype(np.int64)
  pairs_sum = np.sum(s * s, -1) - sq               # sum over ordered pairs u != v of R_u . R_v
  ok = count >= 2
  hms = np.full(n_parents, np.nan)
  hms[ok] = pairs_sum[ok] / (count[ok] * (count[ok] - 1.0))
  return hms, count


def summarize(hms: np.ndarray) -> dict:
  """mean, median, min, max and count over the parents with >= 2 children (SPEC 4)."""
  h = np.asarray(hms, np.float64)
  h = h[np.isfinite(h)]
  if h.size == 0:
    nan = float("nan")
    return {"mean": nan, "median": nan, "min": nan, "max": nan, "count": 0}
  return {"mean": float(h.mean()), "median": float(np.median(h)), "min": float(h.min()),
          "max": float(h.max()), "count": int(h.size)}


def restrict_children(parent: np.ndarray, keep: np.ndarray) -> np.ndarray:
  """Parent map where units not in `keep` (e.g. dead units) have no parent (-1)."""
  parent = np.asarray(parent, np.int64)
  return np.where(np.asarray(keep, bool), parent, -1)


def hms_levels(r1: np.ndarray, parent_maps, sizes, keep1=None) -> list[dict]:
  """HMS at every level of an N-level hierarchy (SPEC 4, N levels).

  parent_maps[l] maps level-(l+1) units to level-(l+2) units (-1 = none); sizes[l] is the number of
  level-(l+2) units. R of a level-l unit (l >= 2) is the mean of its children's R; a unit with no
  children has no R and is not a child at the next level. Returns per level {hms, count, summary,
  parent} with the effective parent map used.
  """
  out = []
  r = unit_rows(np.asarray(r1, np.float64))
  keep = np.ones(r.shape[0], bool) if keep1 is None else np.asarray(keep1, bool)
  for pm, n_par in zip(parent_maps, sizes):
    pm = restrict_children(pm, keep)
    hms, count = hms_per_parent(r, pm, n_par)
    out.append({"hms": hms, "count": count, "summary": summarize(hms), "parent": pm})
    sums = segment_sum(r, pm, n_par)
    keep = count > 0
    r = np.where(keep[:, None], sums / np.maximum(count, 1)[:, None], 0.0)
  return out
