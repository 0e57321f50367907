"""Scoring a learned two-level hierarchy against any truth file (docs/hierarchy_quality.md).

Atoms are matched to truth leaves by cosine (> match_cos, default .9). Over the atoms matched to a
child (a leaf with a parent), each atom's truth label is that child's parent:
  parent_accuracy  each learned parent is named by the majority truth parent of its atoms; the
                   fraction of matched child atoms whose learned parent names their truth parent.
                   An atom with no parent (abstained) counts as wrong. parent_accuracy_chance is
                   the same with the learned labels shuffled among those atoms (group sizes kept).
  parent_ari       ARI of learned vs truth parents over the same atoms; each abstained atom is
                   its own singleton group, so abstaining on children cannot raise the ARI.
  grand_ari        three-level truths: the ARI against the grandparents instead.
  orphan_abstain   fraction of atoms matched to an orphan leaf that got no parent (want 1);
  child_abstain    fraction of matched child atoms that got no parent (want 0).
Atom health: dead_fraction (atoms that never fired on the evaluation tokens) and duplicates (atoms
matched to a leaf that a better atom already matches), as a fraction of all atoms.
"""
from __future__ import annotations

import numpy as np

from csae_jax.evaluation import recovery


def _unit(a):
  a = np.asarray(a, np.float64)
  return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)


def _with_singletons(labels: np.ndarray) -> np.ndarray:
  """-1 entries become fresh singleton labels."""
  out = np.asarray(labels, np.int64).copy()
  neg = np.flatnonzero(out < 0)
  out[neg] = out.max(initial=-1) + 1 + np.arange(len(neg))
  return out


def majority_accuracy(true: np.ndarray, pred: np.ndarray) -> float:
  """Fraction of items whose predicted group (-1: none, always wrong) names their true label."""
  true, pred = np.asarray(true), np.asarray(pred)
  if len(true) == 0:
    return float("nan")
  has = pred >= 0
  if not has.any():
    return 0.0
  return float(recovery.contingency(true[has], pred[has]).max(0).sum() / len(true))


def score(atoms1, parent_map, truth, *, fired=None, match_cos: float = 0.9, trials: int = 50,
          seed: int = 0) -> dict:
  """Scores of one learned hierarchy (atoms1 (n1, d), parent_map (n1,) or -1) against `truth`."""
  atoms1 = np.asarray(atoms1, np.float64)
  parent_map = np.asarray(parent_map, np.int64)
  n1 = atoms1.shape[0]
  if parent_map.shape != (n1,):
    raise ValueError(f"parent_map must be ({n1},), got {parent_map.shape}")
  if atoms1.shape[1] != truth.leaf_dirs.shape[1]:
    raise ValueError(f"atoms have d={atoms1.shape[1]} but the truth has d="
                     f"{truth.leaf_dirs.shape[1]}")
  cos = _unit(atoms1) @ _unit(truth.leaf_dirs).T          # (n1, L)
  if fired is not None:
    cos = np.where(np.asarray(fired, bool)[:, None], cos, -1.0)
  best_leaf, best_cos = cos.argmax(1), cos.max(1)
  matched = best_cos > match_cos
  is_child = truth.leaf_parent >= 0
  per_leaf = cos.max(0)
  out = {"children_recovered": float(np.mean(per_leaf[is_child] > match_cos))}
  if (~is_child).any():
    out["orphans_recovered"] = float(np.mean(per_leaf[~is_child] > match_cos))
  child_atoms = matched & is_child[best_leaf]
  orphan_atoms = matched & ~is_child[best_leaf]
  true = truth.leaf_parent[best_leaf[child_atoms]]
  pred = parent_map[child_atoms]
  out["atoms_scored"] = int(child_atoms.sum())
  out["parent_accuracy"] = majority_accuracy(true, pred)
  rng = np.random.default_rng(seed)
  out["parent_accuracy_chance"] = (float(np.mean([majority_accuracy(true, rng.permutation(pred))
                                                  for _ in range(trials)]))
                                   if len(true) else float("nan"))
  out["parent_ari"] = recovery.adjusted_rand_index(true, _with_singletons(pred))
  if np.any(truth.parent_parent >= 0):
    out["grand_ari"] = recovery.adjusted_rand_index(truth.parent_parent[true],
                                                    _with_singletons(pred))
  out["child_abstain"] = float(np.mean(pred < 0)) if len(pred) else float("nan")
  out["orphan_abstain"] = (float(np.mean(parent_map[orphan_atoms] < 0)) if orphan_atoms.any()
                           else float("nan"))
  out["dead_fraction"] = float(1.0 - np.mean(fired)) if fired is not None else float("nan")
  out["duplicates"] = float((matched.sum() - len(np.unique(best_leaf[matched]))) / n1)
  return out


def distinct_directions(atoms, thr: float = 0.95) -> int:
  """Collapse figure: greedy count of directions, merging atoms within cos > thr of a kept one."""
  w = _unit(atoms)
  kept = np.zeros((0, w.shape[1]))
  for v in w:
    if not len(kept) or np.max(kept @ v) <= thr:
      kept = np.vstack([kept, v])
  return int(len(kept))


def parent_like(atoms, truth, near: float = 0.6) -> float:
  """Collapse figure: of the atoms near some truth direction (cos > near), the fraction closer to
  a parent direction than to every leaf."""
  w = _unit(atoms)
  to_leaf = (w @ _unit(truth.leaf_dirs).T).max(1)
  to_parent = (w @ _unit(truth.parent_dirs).T).max(1)
  keep = np.maximum(to_leaf, to_parent) > near
  return float(np.mean(to_parent[keep] > to_leaf[keep])) if keep.any() else float("nan")
