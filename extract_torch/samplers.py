"""The paper's per-class samplers and splits (SPEC section 6), seeded, and shard ranges.

A sampler maps a source's labels to the ordered list of source positions to extract.
Positions come out sorted (source order), so a sampled set is the same set whatever the batch
size, and shards/resumption address it by position in this list.

Paper settings (`PAPER_SPLITS`):
  color:       all images, 8:2 train/test split (random, seeded)
  imagenet:    train = 50 per class from the train split; test = the whole validation split
  inaturalist: 5 per species for train and 5 per species for test
  coco:        250 per category for train and for test
"""
from __future__ import annotations

import numpy as np

SAMPLERS = ("all", "per_class", "fraction")

PAPER_SPLITS = {
    ("color", "train"): {"sampler": "fraction", "fraction": 0.8, "part": "first"},
    ("color", "test"): {"sampler": "fraction", "fraction": 0.8, "part": "rest"},
    ("imagenet", "train"): {"sampler": "per_class", "per_class": 50},
    ("imagenet", "test"): {"sampler": "all"},
    ("inaturalist", "train"): {"sampler": "per_class", "per_class": 5},
    ("inaturalist", "test"): {"sampler": "per_class", "per_class": 5},
    ("coco", "train"): {"sampler": "per_class", "per_class": 250},
    ("coco", "test"): {"sampler": "per_class", "per_class": 250},
}


def sample_all(labels) -> np.ndarray:
  return np.arange(len(labels), dtype=np.int64)


def sample_per_class(labels, per_class: int, seed: int, offset: int = 0,
                     strict: bool = False) -> np.ndarray:
  """`per_class` random positions of each class (seeded); classes with fewer keep all they have
  (or raise under strict). offset skips the first `offset` of each class's random order, so
  offset=per_class draws a second, disjoint sample from the same pool."""
  if per_class <= 0:
    raise ValueError(f"per_class must be positive, got {per_class}")
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  chosen = []
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    order = rng.permutation(members)
    if strict and len(order) < offset + per_class:
      raise ValueError(f"class {c} has {len(order)} images; {offset + per_class} needed")
    chosen.append(order[offset:offset + per_class])
  return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def sample_fraction(labels, fraction: float, seed: int, part: str = "first") -> np.ndarray:
  """A seeded random split: the first `fraction` of a permutation, or the rest."""
  if not 0.0 < fraction < 1.0:
    raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
  if part not in ("first", "rest"):
    raise ValueError(f"part must be 'first' or 'rest', got {part!r}")
  n = len(labels)
  perm = np.random.default_rng(seed).permutation(n)
  cut = int(round(fraction * n))
  return np.sort(perm[:cut] if part == "first" else perm[cut:]).astype(np.int64)


def sample(labels, sampler: str = "all", seed: int = 0, per_class: int = 0,
           fraction: float = 0.8, part: str = "first", offset: int = 0) -> np.ndarray:
  if sampler == "all":
    return sample_all(labels)
  if sampler == "per_class":
    return sample_per_class(labels, per_class, seed, offset)
  if sampler == "fraction":
    return sample_fraction(labels, fraction, seed, part)
  raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")


def paper_split(dataset: str, split: str) -> dict:
  """Sampler settings of the paper for (dataset, split)."""
  key = (dataset, split)
  if key not in PAPER_SPLITS:
    raise ValueError(f"no paper sampling for {key}; known: {sorted(PAPER_SPLITS)}")
  return dict(PAPER_SPLITS[key])


def shard_range(num_items: int, batch_size: int, shard_index: int, num_shards: int):
  """[start, stop) positions of a shard: contiguous whole batches, so that shards combined see
  exactly the batches of one run (bit-identical activations)."""
  if num_shards <= 0 or not 0 <= shard_index < num_shards:
    raise ValueError(f"need 0 <= shard_index < num_shards, got {shard_index}/{num_shards}")
  n_batches = -(-num_items // batch_size)
  lo = n_batches * shard_index // num_shards
  hi = n_batches * (shard_index + 1) // num_shards
  return min(lo * batch_size, num_items), min(hi * batch_size, num_items)
