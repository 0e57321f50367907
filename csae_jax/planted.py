"""A planted concept hierarchy with known ground truth, for tests and the first main job.

Parents are random unit directions in R^d. Each child is its parent plus its own component
orthogonal to that parent (normalised), so siblings share the parent direction. Images each have
one parent concept; their tokens are sparse non-negative mixtures of children, mostly of that
parent's children, plus a shared offset and Gaussian noise. Image reference embeddings (for HMS)
are noisy codes of the image's parent and dominant child.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class PlantedConfig:
  d: int = 64
  n_parents: int = 8
  children_per_parent: int = 4
  ortho_scale: float = 0.9        # |orthogonal part| / |parent part| before normalising a child
  n_images: int = 400
  tokens_per_image: int = 64
  active_per_token: int = 3
  in_family_prob: float = 0.85    # a token's child comes from the image's parent with this prob.
  coef_low: float = 0.5
  coef_high: float = 2.0
  noise: float = 0.05
  offset_scale: float = 0.5       # norm of a shared offset (what b_dec should learn)
  embed_dim: int = 32
  embed_noise: float = 0.3
  seed: int = 0

  def validate(self):
    for name in ("d", "n_parents", "children_per_parent", "n_images", "tokens_per_image",
                 "active_per_token", "embed_dim"):
      v = getattr(self, name)
      if not isinstance(v, (int, np.integer)) or v <= 0:
        raise ValueError(f"planted.{name} must be a positive integer, got {v!r}")
    if self.active_per_token > self.n_parents * self.children_per_parent:
      raise ValueError(f"active_per_token={self.active_per_token} exceeds the number of children")


@dataclasses.dataclass
class PlantedHierarchy:
  tokens: np.ndarray          # (N, d) float32
  token_offsets: np.ndarray   # (n_images + 1,) int64: tokens of image i are [o[i], o[i+1])
  image_parent: np.ndarray    # (n_images,) int
  image_child: np.ndarray     # (n_images,) int: the image's most used child
  embeddings: np.ndarray      # (n_images, embed_dim) float32 reference embeddings
  parent_dirs: np.ndarray     # (P, d)
  child_dirs: np.ndarray      # (C, d)
  child_parent: np.ndarray    # (C,) parent of each child
  offset: np.ndarray          # (d,)


def make_planted(cfg: PlantedConfig = PlantedConfig()) -> PlantedHierarchy:
  cfg.validate()
  rng = np.random.default_rng(cfg.seed)
  d, P, m = cfg.d, cfg.n_parents, cfg.children_per_parent
  parents = rng.normal(size=(P, d))
  parents /= np.linalg.norm(parents, axis=1, keepdims=True)
  children, child_parent = [], []
  for p in range(P):
    for _ in range(m):
      u = rng.normal(size=d)
      u -= (u @ parents[p]) * parents[p]
      u /= np.linalg.norm(u)
      c = parents[p] + cfg.ortho_scale * u
      children.append(c / np.linalg.norm(c))
      child_parent.append(p)
  children = np.asarray(children)
  child_parent = np.asarray(child_parent)
  C = len(children)
  offset = rng.normal(size=d)
  offset *= cfg.offset_scale / np.linalg.norm(offset)

  image_parent = rng.integers(0, P, size=cfg.n_images)
  T, a = cfg.tokens_per_image, cfg.active_per_token
  own = np.stack([np.flatnonzero(child_parent == p) for p in range(P)])  # (P, m)
  tokens = np.zeros((cfg.n_images, T, d))
  image_child = np.zeros(cfg.n_images, np.int64)
  for i in range(cfg.n_images):
    favourite = rng.choice(own[image_parent[i]])
    image_child[i] = favourite
    codes = np.zeros((T, C))
    for t in range(T):
      chosen = set()
      while len(chosen) < a:
        if rng.random() < cfg.in_family_prob:
          c = favourite if rng.random() < 0.5 else rng.choice(own[image_parent[i]])
        else:
          c = rng.integers(0, C)
        chosen.add(int(c))
      idx = np.fromiter(chosen, int)
      codes[t, idx] = rng.uniform(cfg.coef_low, cfg.coef_high, size=len(idx))
    tokens[i] = codes @ children
  tokens = tokens.reshape(-1, d) + offset + cfg.noise * rng.normal(size=(cfg.n_images * T, d))
  offsets = np.arange(cfg.n_images + 1, dtype=np.int64) * T

  parent_code = rng.normal(size=(P, cfg.embed_dim))
  child_code = rng.normal(size=(C, cfg.embed_dim))
  emb = (parent_code[image_parent] + 0.5 * child_code[image_child]
         + cfg.embed_noise * rng.normal(size=(cfg.n_images, cfg.embed_dim)))
  return PlantedHierarchy(tokens.astype(np.float32), offsets, image_parent, image_child,
                          emb.astype(np.float32), parents.astype(np.float32),
                          children.astype(np.float32), child_parent, offset.astype(np.float32))


def _unit(a):
  a = np.asarray(a, np.float64)
  return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)


def recovery_report(planted: PlantedHierarchy, atoms, parent_map, parent_atoms,
                    match_cos: float = 0.8) -> dict:
  """How well a learned two-level hierarchy recovers the planted one.

  atoms: learned level-1 atoms (n1, d); parent_map: (n1,) learned parent or -1;
  parent_atoms: learned level-2 concepts (n2, d) as points in activation space. Each learned atom is matched to its best planted
  child (cosine), each level-2 atom to its best planted parent. `parent_match` is the fraction of
  matched level-1 atoms (cos >= match_cos) with a parent whose planted parent is their child's
  planted parent; chance is about 1 / n_parents.
  """
  a = _unit(atoms)
  child_cos = a @ _unit(planted.child_dirs).T                 # (n1, C)
  best_child = child_cos.argmax(1)
  best_child_cos = child_cos.max(1)
  per_child_best = child_cos.max(0)                           # best learned atom per planted child
  pa = _unit(parent_atoms)
  parent_cos = pa @ _unit(planted.parent_dirs).T              # (n2, P)
  l2_parent = parent_cos.argmax(1)
  parent_map = np.asarray(parent_map)
  matched = best_child_cos >= match_cos
  has_parent = parent_map >= 0
  use = matched & has_parent
  truth = planted.child_parent[best_child[use]]
  learned = l2_parent[parent_map[use]]
  frac = float(np.mean(truth == learned)) if use.any() else 0.0
  # Purity: each learned parent's children, by majority planted parent (no geometry involved).
  pure = 0
  for r in np.unique(parent_map[use]):
    pure += np.bincount(truth[parent_map[use] == r]).max()
  purity = float(pure / use.sum()) if use.any() else 0.0
  return {
      "children_recovered": float(np.mean(per_child_best >= match_cos)),
      "mean_best_child_cos": float(per_child_best.mean()),
      "parents_recovered": float(np.mean(parent_cos.max(0) >= match_cos)),
      "mean_best_parent_cos": float(parent_cos.max(0).mean()),
      "atoms_matched": int(matched.sum()),
      "atoms_matched_with_parent": int(use.sum()),
      "parent_match": frac,
      "parent_match_chance": 1.0 / planted.parent_dirs.shape[0],
      "parent_purity": purity,
  }
