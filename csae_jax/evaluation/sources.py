"""Token sources for evaluation: an activation store or in-memory arrays (the planted hierarchy).

Both expose d, num_tokens, num_images, token_offsets, labels, image_ids, read_tokens(start, stop),
has_embeddings and embeddings(), the subset of csae_jax.store.ActivationStore evaluation needs.
Checks at this boundary: matching d, a non-empty split, present and finite reference embeddings.
"""
from __future__ import annotations

import numpy as np

try:  # the extraction flag that writes reference embeddings into a store
  from csae_jax.store import EMBEDDING_FLAG as EMBED_FLAG
except ImportError:  # pragma: no cover - the store module is part of the package
  EMBED_FLAG = "--embedding_backbone"


class ArraySource:
  """In-memory tokens with per-image offsets (tests, the planted hierarchy)."""

  def __init__(self, tokens, token_offsets, *, embeddings=None, labels=None, image_ids=None,
               label_names=None, name: str = "arrays"):
    self.tokens = np.asarray(tokens)
    if self.tokens.ndim != 2:
      raise ValueError(f"tokens must be [N, d], got shape {self.tokens.shape}")
    self.token_offsets = np.asarray(token_offsets, np.int64)
    _check_offsets(self.token_offsets, self.tokens.shape[0], name)
    self.d = int(self.tokens.shape[1])
    self.num_tokens = int(self.tokens.shape[0])
    self.num_images = int(len(self.token_offsets) - 1)
    self._embeddings = None if embeddings is None else np.asarray(embeddings, np.float32)
    self.labels = None if labels is None else np.asarray(labels, np.int64)
    self.image_ids = (list(image_ids) if image_ids is not None
                      else [f"image_{i}" for i in range(self.num_images)])
    self.label_names = label_names
    self.name = name
    self.manifest = {"kind": "arrays", "name": name}

  @property
  def has_embeddings(self) -> bool:
    return self._embeddings is not None

  def embeddings(self) -> np.ndarray:
    if self._embeddings is None:
      raise ValueError(f"source {self.name!r} has no reference embeddings (needed for HMS)")
    return self._embeddings

  def read_tokens(self, start: int, stop: int) -> np.ndarray:
    return np.asarray(self.tokens[start:stop], np.float32)

  def subset_images(self, images, name: str | None = None) -> "ArraySource":
    """A source over a sorted subset of images (a split), tokens re-packed contiguously."""
    images = np.asarray(images, np.int64)
    o = self.token_offsets
    lens = o[images + 1] - o[images]
    tok_idx = np.concatenate([np.arange(o[i], o[i + 1]) for i in images]) if len(images) else \
        np.zeros(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    return ArraySource(self.tokens[tok_idx], offsets,
                       embeddings=None if self._embeddings is None else self._embeddings[images],
                       labels=None if self.labels is None else self.labels[images],
                       image_ids=[self.image_ids[i] for i in images],
                       label_names=self.label_names, name=name or self.name)


def _check_offsets(o, n_tokens, name):
  if o.ndim != 1 or len(o) < 1 or o[0] != 0 or o[-1] != n_tokens or np.any(np.diff(o) < 0):
    raise ValueError(f"{name}: token_offsets must be non-decreasing from 0 to num_tokens="
                     f"{n_tokens}, got {o[:3]}...{o[-3:]} (length {len(o)})")


def open_store(path: str):
  """ActivationStore.open(path); imported lazily so evaluation works without a store module."""
  from csae_jax.store import ActivationStore
  return ActivationStore.open(path)


def planted_sources(planted_cfg, eval_fraction: float = 0.2, seed: int = 0):
  """(train, eval, planted) sources from csae_jax.planted, split by image."""
  from csae_jax import planted as planted_lib
  ph = planted_lib.make_planted(planted_cfg)
  full = ArraySource(ph.tokens, ph.token_offsets, embeddings=ph.embeddings,
                     labels=ph.image_parent, name="planted",
                     image_ids=[planted_image_id(i) for i in range(len(ph.image_parent))])
  n = full.num_images
  if not 0.0 < eval_fraction < 1.0:
    raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
  perm = np.random.default_rng(seed).permutation(n)
  n_eval = max(1, int(round(eval_fraction * n)))
  eval_idx, train_idx = np.sort(perm[:n_eval]), np.sort(perm[n_eval:])
  return (full.subset_images(train_idx, "planted/train"), full.subset_images(eval_idx, "planted/eval"),
          ph)


def planted_image_id(i: int) -> str:
  return f"planted-{i:06d}"


def planted_image_children(planted) -> dict:
  """image id -> the planted image's dominant child (for the browser's placeholder swatches)."""
  return {planted_image_id(i): int(c) for i, c in enumerate(planted.image_child)}


def check_source(source, d: int | None = None, *, need_embeddings: bool = True, what="store"):
  """Boundary checks before evaluating: dimension, empty split, embeddings present and finite."""
  name = getattr(source, "name", None) or getattr(source, "path", None) or what
  if d is not None and int(source.d) != int(d):
    raise ValueError(f"{what} {name!r} has activation dimension d={source.d} but the checkpoint "
                     f"expects d={d}; evaluate a run on activations of the layer it was trained on")
  if int(source.num_tokens) == 0 or int(source.num_images) == 0:
    raise ValueError(f"{what} {name!r} is an empty split ({source.num_tokens} tokens, "
                     f"{source.num_images} images); nothing to evaluate")
  if need_embeddings:
    if not source.has_embeddings:
      raise ValueError(f"{what} {name!r} has no reference image embeddings, which HMS needs; "
                       f"re-run extraction with {EMBED_FLAG}=<backbone> to add them")
    e = source.embeddings()
    if e.shape[0] != source.num_images:
      raise ValueError(f"{what} {name!r} has {e.shape[0]} embeddings for {source.num_images} images")
    if not np.all(np.isfinite(e)):
      raise ValueError(f"{what} {name!r}: reference embeddings contain NaN/Inf")
