"""Ground-truth hierarchy generators for the benchmark suite (docs/hierarchy_quality.md).

Every regime builds unit feature directions with a known tree and samples tokens as sparse
non-negative mixtures of the leaf features (children and orphans) plus a shared offset and noise:

  cofire     (a) child = parent + own component; an image has one parent and its tokens draw
             mostly from that parent's children, so siblings co-occur (csae_jax.planted's regime).
  geometric  (b) same geometry, but every token draws its children uniformly from all children:
             siblings co-occur no more than strangers, so co-occurrence carries no family signal;
             only the shared parent direction does. No parent feature ever fires.
  three      (c) three levels: grandparent -> parent -> child, each a unit direction plus its own
             component; images pick a parent and mostly stay within it (then its grandparent).
  hard       (d) uneven family sizes, pairs of correlated parents (cos `pair_cos`, and images that
             mix a parent with its partner), `n_orphans` leaf features without a parent, and
             log-normal (heavy-tailed) magnitudes.

The truth (`Truth`) is what scoring needs: leaf directions, each leaf's parent (-1 = orphan),
parent directions and, for three levels, each parent's grandparent. It is saved as an .npz.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

REGIMES = ("cofire", "geometric", "three", "hard")


@dataclasses.dataclass(frozen=True)
class GenConfig:
  regime: str = "cofire"
  d: int = 64
  n_parents: int = 24
  children_per_parent: int = 4       # mean family size in "hard"
  n_grandparents: int = 4            # "three" only (n_parents must be a multiple)
  n_orphans: int = 0                 # "hard" uses 16 by default (see regime_config)
  ortho_scale: float = 0.9           # |own component| / |parent part| before normalising
  pair_cos: float = 0.5              # "hard": cosine between the two parents of a pair
  partner_prob: float = 0.2          # "hard": in-family draws that come from the partner parent
  n_images: int = 600
  tokens_per_image: int = 64
  active_per_token: int = 3
  in_family_prob: float = 0.85
  coef_low: float = 0.5
  coef_high: float = 2.0
  lognormal_sigma: float = 0.0       # > 0: magnitudes exp(N(0, sigma)) (heavy tails)
  noise: float = 0.05
  offset_scale: float = 0.5
  seed: int = 0

  def validate(self):
    if self.regime not in REGIMES:
      raise ValueError(f"regime must be one of {REGIMES}, got {self.regime!r}")
    for name in ("d", "n_parents", "children_per_parent", "n_images", "tokens_per_image",
                 "active_per_token", "n_grandparents"):
      v = getattr(self, name)
      if not isinstance(v, (int, np.integer)) or v <= 0:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if self.n_orphans < 0:
      raise ValueError(f"n_orphans must be >= 0, got {self.n_orphans}")
    if self.regime == "three" and self.n_parents % self.n_grandparents:
      raise ValueError(f"n_parents={self.n_parents} must be a multiple of n_grandparents="
                       f"{self.n_grandparents}")
    if self.regime == "hard" and self.n_parents % 2:
      raise ValueError(f"'hard' pairs its parents: n_parents={self.n_parents} must be even")
    if not 0.0 <= self.in_family_prob <= 1.0:
      raise ValueError(f"in_family_prob must be in [0, 1], got {self.in_family_prob}")


def regime_config(regime: str, seed: int = 0, **overrides) -> GenConfig:
  """The suite's setting of each regime (docs/hierarchy_quality.md)."""
  base = dict(regime=regime, seed=seed)
  if regime == "geometric":
    base.update(in_family_prob=0.0)
  elif regime == "hard":
    base.update(n_orphans=16, lognormal_sigma=0.75, in_family_prob=0.75)
  base.update(overrides)
  cfg = GenConfig(**base)
  cfg.validate()
  return cfg


@dataclasses.dataclass
class Truth:
  leaf_dirs: np.ndarray        # (C + O, d): children, then orphans
  leaf_parent: np.ndarray      # (C + O,) parent index, -1 for an orphan
  parent_dirs: np.ndarray      # (P, d)
  parent_parent: np.ndarray    # (P,) grandparent index or -1 (two-level regimes)
  grand_dirs: np.ndarray       # (G, d), empty for two-level regimes
  regime: str
  config: dict

  def save(self, path: str) -> None:
    """Atomic .npz (temp + rename), loadable without pickle."""
    tmp = path + ".tmp.npz"
    np.savez(tmp, leaf_dirs=self.leaf_dirs, leaf_parent=self.leaf_parent,
             parent_dirs=self.parent_dirs, parent_parent=self.parent_parent,
             grand_dirs=self.grand_dirs, regime=np.asarray(self.regime),
             config=np.asarray(json.dumps(self.config)))
    os.replace(tmp, path)

  @classmethod
  def load(cls, path: str) -> "Truth":
    with np.load(path, allow_pickle=False) as z:
      missing = {"leaf_dirs", "leaf_parent", "parent_dirs"} - set(z.files)
      if missing:
        raise ValueError(f"{path} is not a truth file: missing {sorted(missing)}")
      t = cls(np.asarray(z["leaf_dirs"], np.float64), np.asarray(z["leaf_parent"], np.int64),
              np.asarray(z["parent_dirs"], np.float64),
              np.asarray(z["parent_parent"], np.int64) if "parent_parent" in z.files else
              np.full(len(z["parent_dirs"]), -1, np.int64),
              np.asarray(z["grand_dirs"], np.float64) if "grand_dirs" in z.files else
              np.zeros((0, z["leaf_dirs"].shape[1])),
              str(z["regime"]) if "regime" in z.files else "unknown",
              json.loads(str(z["config"])) if "config" in z.files else {})
    t.validate()
    return t

  def validate(self) -> None:
    c, d = self.leaf_dirs.shape
    p = self.parent_dirs.shape[0]
    if self.leaf_parent.shape != (c,) or self.parent_dirs.shape[1] != d:
      raise ValueError("truth: leaf_parent must be (C,) and parent_dirs (P, d)")
    if np.any(self.leaf_parent < -1) or np.any(self.leaf_parent >= p):
      raise ValueError(f"truth: leaf_parent must be in [-1, {p})")
    if not np.all(np.isfinite(self.leaf_dirs)) or not np.all(np.isfinite(self.parent_dirs)):
      raise ValueError("truth: directions contain NaN/Inf")


@dataclasses.dataclass
class Dataset:
  tokens: np.ndarray          # (N, d) float32
  token_offsets: np.ndarray   # (n_images + 1,)
  image_parent: np.ndarray    # (n_images,) the image's parent, -1 when it has none
  truth: Truth
  codes: np.ndarray           # (N, C + O) the planted leaf magnitudes of every token
  offset: np.ndarray          # (d,) the shared offset


def _unit(a):
  a = np.asarray(a, np.float64)
  return a / np.linalg.norm(a, axis=-1, keepdims=True)


def _own(rng, base_dir, scale):
  """normalise(base + scale * u) with u a random unit vector orthogonal to base."""
  u = rng.normal(size=base_dir.shape)
  u -= (u @ base_dir) * base_dir
  return _unit(base_dir + scale * _unit(u))


def _family_sizes(cfg: GenConfig, rng) -> np.ndarray:
  if cfg.regime != "hard":
    return np.full(cfg.n_parents, cfg.children_per_parent)
  m = cfg.children_per_parent
  return rng.integers(max(2, m // 2), 2 * m, size=cfg.n_parents)   # uneven: 2..2m-1


def make_tree(cfg: GenConfig, rng):
  """(leaf_dirs, leaf_parent, parent_dirs, parent_parent, grand_dirs) of the regime."""
  d, P = cfg.d, cfg.n_parents
  grand = np.zeros((0, d))
  parent_parent = np.full(P, -1, np.int64)
  if cfg.regime == "three":
    grand = _unit(rng.normal(size=(cfg.n_grandparents, d)))
    parent_parent = np.repeat(np.arange(cfg.n_grandparents), P // cfg.n_grandparents)
    parents = np.stack([_own(rng, grand[g], cfg.ortho_scale) for g in parent_parent])
  elif cfg.regime == "hard":
    first = _unit(rng.normal(size=(P // 2, d)))
    s = np.sqrt(1.0 - cfg.pair_cos ** 2) / cfg.pair_cos
    second = np.stack([_own(rng, f, s) for f in first])   # cos(first, second) = pair_cos
    parents = np.stack([first, second], 1).reshape(P, d)
  else:
    parents = _unit(rng.normal(size=(P, d)))
  sizes = _family_sizes(cfg, rng)
  leaf_parent = np.repeat(np.arange(P), sizes)
  leaves = [_own(rng, parents[p], cfg.ortho_scale) for p in leaf_parent]
  if cfg.n_orphans:
    leaves += list(_unit(rng.normal(size=(cfg.n_orphans, d))))
    leaf_parent = np.concatenate([leaf_parent, np.full(cfg.n_orphans, -1)])
  return np.stack(leaves), leaf_parent.astype(np.int64), parents, parent_parent, grand


def _partner(p: int) -> int:
  return p ^ 1


def make_dataset(cfg: GenConfig) -> Dataset:
  """Tokens and truth of one regime and seed (deterministic in cfg)."""
  cfg.validate()
  rng = np.random.default_rng(cfg.seed)
  leaves, leaf_parent, parents, parent_parent, grand = make_tree(cfg, rng)
  L, d, P = len(leaves), cfg.d, cfg.n_parents
  members = [np.flatnonzero(leaf_parent == p) for p in range(P)]
  siblings_of_grand = {g: np.flatnonzero(parent_parent == g) for g in range(len(grand))}
  offset = _unit(rng.normal(size=d)) * cfg.offset_scale
  T, a = cfg.tokens_per_image, cfg.active_per_token
  image_parent = rng.integers(0, P, size=cfg.n_images)
  if cfg.regime == "geometric":
    image_parent[:] = -1
  codes = np.zeros((cfg.n_images * T, L))
  for i in range(cfg.n_images):
    p = image_parent[i]
    for t in range(T):
      chosen = set()
      while len(chosen) < a:
        if p >= 0 and rng.random() < cfg.in_family_prob:
          q = p
          if cfg.regime == "hard" and rng.random() < cfg.partner_prob:
            q = _partner(p)
          elif cfg.regime == "three" and rng.random() < 0.25:
            q = rng.choice(siblings_of_grand[parent_parent[p]])
          chosen.add(int(rng.choice(members[q])))
        else:
          chosen.add(int(rng.integers(0, L)))
      idx = np.fromiter(chosen, int)
      if cfg.lognormal_sigma > 0:
        mag = np.exp(cfg.lognormal_sigma * rng.normal(size=len(idx)))
      else:
        mag = rng.uniform(cfg.coef_low, cfg.coef_high, size=len(idx))
      codes[i * T + t, idx] = mag
  tokens = codes @ leaves + offset + cfg.noise * rng.normal(size=(cfg.n_images * T, d))
  offsets = np.arange(cfg.n_images + 1, dtype=np.int64) * T
  truth = Truth(leaves, leaf_parent, parents, parent_parent, grand, cfg.regime,
                dataclasses.asdict(cfg))
  return Dataset(tokens.astype(np.float32), offsets, image_parent, truth, codes, offset)
