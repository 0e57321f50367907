"""Parent maps of Level-1 units (SPEC section 4, Parents; SPEC 3, post-hoc ablations).

CSAE parents come from the Level-2 encoder (csae_jax.cascade.parent_maps). Flat pairs, Matryoshka
groups and Stacked use co-activation counts C[j, r] gathered over evaluation tokens (codes.py):
pi(j) = argmax_r C[j, r], needs C > 0, ties to the lowest r. Post-hoc ablations cluster atoms.
"""
from __future__ import annotations

import numpy as np


def coactivation_parents(counts: np.ndarray) -> np.ndarray:
  """pi(j) = argmax_r C[j, r] (ties -> lowest r, np.argmax's first maximum); -1 when the row is 0."""
  c = np.asarray(counts)
  if c.ndim != 2:
    raise ValueError(f"co-activation counts must be [n1, n2], got shape {c.shape}")
  if c.shape[1] == 0:
    return np.full(c.shape[0], -1, np.int64)
  best = np.argmax(c, axis=1)
  return np.where(c.max(1) > 0, best, -1).astype(np.int64)


def _unit(a):
  a = np.asarray(a, np.float64)
  return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)


def cluster_atoms(atoms: np.ndarray, n_clusters: int, method: str = "hac", *, keep=None,
                  linkage: str = "ward", n_neighbors: int = 10, seed: int = 0) -> np.ndarray:
  """Post-hoc parents (SPEC 3, Table 4): cluster labels of unit-normalised Level-1 atoms.

  method: "hac" (sklearn AgglomerativeClustering; `linkage` ward/average/complete/single, cosine
  metric for the non-ward linkages) or "spectral" (SpectralClustering on a k-nearest-neighbour
  graph). keep: optional bool mask of atoms to cluster (e.g. alive ones); others get -1.
  The number of clusters is min(n_clusters, number of atoms clustered).
  """
  from sklearn import cluster as skc

  x = _unit(atoms)
  n = x.shape[0]
  keep = np.ones(n, bool) if keep is None else np.asarray(keep, bool)
  labels = np.full(n, -1, np.int64)
  idx = np.flatnonzero(keep)
  if idx.size == 0:
    return labels
  k = int(min(n_clusters, idx.size))
  if k <= 1 or idx.size < 3:
    labels[idx] = 0
    return labels
  pts = x[idx]
  if method == "hac":
    metric = "euclidean" if linkage == "ward" else "cosine"
    model = skc.AgglomerativeClustering(n_clusters=k, linkage=linkage, metric=metric)
    labels[idx] = model.fit_predict(pts)
  elif method == "spectral":
    nn = int(min(max(n_neighbors, 2), idx.size - 1))
    model = skc.SpectralClustering(n_clusters=k, affinity="nearest_neighbors", n_neighbors=nn,
                                   assign_labels="cluster_qr", random_state=seed)
    labels[idx] = model.fit_predict(pts)
  else:
    raise ValueError(f"unknown clustering method {method!r}; use 'hac' or 'spectral'")
  return labels


def children_of(parent: np.ndarray, r: int) -> np.ndarray:
  return np.flatnonzero(np.asarray(parent) == r)
