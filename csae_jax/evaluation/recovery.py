"""Ground-truth recovery on the planted hierarchy (csae_jax.planted): atoms and parents.

Atoms: for each planted child, the best cosine over learned Level-1 atoms. Parents: each learned
Level-1 atom that matches a planted child (cosine >= match_cos) and has a learned parent carries the
planted parent of that child as its true label; the learned parent map is scored against those labels
by purity (sum over learned parents of their largest true-label count / atoms scored) and the
adjusted Rand index, and compared with a random assignment that keeps the learned group sizes.
"""
from __future__ import annotations

import numpy as np


def _unit(a):
  a = np.asarray(a, np.float64)
  return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)


def contingency(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
  """(n_true_labels, n_pred_labels) counts; labels are remapped to 0..k-1."""
  _, t = np.unique(np.asarray(true), return_inverse=True)
  _, p = np.unique(np.asarray(pred), return_inverse=True)
  table = np.zeros((t.max(initial=-1) + 1, p.max(initial=-1) + 1), np.int64)
  np.add.at(table, (t, p), 1)
  return table


def purity(true: np.ndarray, pred: np.ndarray) -> float:
  """Fraction of items whose predicted group's majority true label equals theirs."""
  if len(true) == 0:
    return float("nan")
  return float(contingency(true, pred).max(0).sum() / len(true))


def adjusted_rand_index(true: np.ndarray, pred: np.ndarray) -> float:
  """Hubert-Arabie ARI from the contingency table (1 = identical partitions, ~0 = chance)."""
  n = len(true)
  if n < 2:
    return float("nan")
  table = contingency(true, pred).astype(np.float64)
  comb2 = lambda a: a * (a - 1) / 2.0
  index = comb2(table).sum()
  a = comb2(table.sum(1)).sum()
  b = comb2(table.sum(0)).sum()
  expected = a * b / comb2(float(n))
  maximum = (a + b) / 2.0
  if maximum == expected:   # both partitions trivial (all one group or all singletons)
    return 1.0
  return float((index - expected) / (maximum - expected))


def random_purity(true: np.ndarray, pred: np.ndarray, trials: int = 100, seed: int = 0) -> float:
  """Mean purity when the learned labels are shuffled among the scored atoms (same group sizes)."""
  if len(true) == 0:
    return float("nan")
  rng = np.random.default_rng(seed)
  pred = np.asarray(pred)
  return float(np.mean([purity(true, rng.permutation(pred)) for _ in range(trials)]))


def score_recovery(atoms1, parent_map, child_dirs, child_parent, *, atoms2=None, parent_dirs=None,
             keep=None, match_cos: float = 0.8, trials: int = 100, seed: int = 0) -> dict:
  """Recovery figures of one learned hierarchy against the planted one.

  atoms1 (n1, d) learned Level-1 atoms; parent_map (n1,) learned parent or -1; child_dirs (C, d),
  child_parent (C,) the planted truth; keep (n1,) optional mask of atoms to score (alive ones).
  """
  a = _unit(atoms1)
  cos = a @ _unit(child_dirs).T                       # (n1, C)
  per_child = cos.max(0)
  best_child = cos.argmax(1)
  matched = cos.max(1) >= match_cos
  parent_map = np.asarray(parent_map)
  use = matched & (parent_map >= 0)
  if keep is not None:
    use &= np.asarray(keep, bool)
  true = np.asarray(child_parent)[best_child[use]]
  pred = parent_map[use]
  out = {
      "mean_best_child_cos": float(per_child.mean()),
      "children_recovered": float(np.mean(per_child >= match_cos)),
      "atoms_scored": int(use.sum()),
      "parent_purity": purity(true, pred),
      "parent_purity_random": random_purity(true, pred, trials, seed),
      "parent_ari": adjusted_rand_index(true, pred),
  }
  if atoms2 is not None and parent_dirs is not None and len(atoms2):
    pc = _unit(atoms2) @ _unit(parent_dirs).T
    out["mean_best_parent_cos"] = float(pc.max(0).mean())
  return out
