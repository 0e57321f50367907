"""Read side of the activation store: `ActivationStore` (open, validate, verify, read)."""
from __future__ import annotations

import json
import os
from typing import Iterable

import numpy as np
import tensorstore as ts

from csae_jax.store.format import (
    chunk_file, _CRC_BYTES, DTYPES, EMBEDDING_FLAG, FORMAT_VERSION, IMAGE_IDS, MANIFEST,
    _num_chunks, _open_array, PARTIAL_SUFFIX, _read, REQUIRED_KEYS, _sha256, _sha256_json,
    StoreError, zero_chunk_sha256)


def _check_manifest_fields(manifest: dict, mpath: str) -> None:
  """Types of the descriptive manifest fields (a hand-edited manifest fails here, by name)."""
  names = manifest["label_names"]
  if names is not None and (not isinstance(names, list)
                            or not all(isinstance(n, str) for n in names)):
    raise StoreError(f"{mpath}: field 'label_names' must be a list of strings or null, got "
                     f"{names!r:.80}")
  emb = manifest["embedding"]
  if emb is not None:
    if not isinstance(emb, dict):
      raise StoreError(f"{mpath}: field 'embedding' must be an object "
                       f"{{'backbone', 'dim'}} or null, got {emb!r:.80}")
    dim = emb.get("dim")
    if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
      raise StoreError(f"{mpath}: field 'embedding.dim' must be a positive integer, got {dim!r}")
  if not isinstance(manifest.get("skipped_images", []), list):
    raise StoreError(f"{mpath}: field 'skipped_images' must be a list")


class ActivationStore:
  """Read side. `open` validates the manifest against the arrays; `verify` rereads every chunk."""

  def __init__(self, path: str, manifest: dict, acts, token_offsets, labels, image_ids,
               embeddings_arr):
    self.path = path
    self.manifest = manifest
    self._acts = acts
    self.token_offsets = token_offsets
    self.labels = labels
    self.image_ids = image_ids
    self._emb = embeddings_arr

  # -- properties
  @property
  def d(self) -> int:
    return int(self.manifest["d"])

  @property
  def dtype(self) -> str:
    return self.manifest["dtype"]

  @property
  def num_tokens(self) -> int:
    return int(self.manifest["num_tokens"])

  @property
  def num_images(self) -> int:
    return int(self.manifest["num_images"])

  @property
  def chunk_tokens(self) -> int:
    return int(self.manifest["chunk_tokens"])

  @property
  def num_chunks(self) -> int:
    return _num_chunks(self.num_tokens, self.chunk_tokens)

  @property
  def label_names(self) -> list | None:
    return self.manifest.get("label_names")

  @property
  def has_embeddings(self) -> bool:
    return self._emb is not None

  @property
  def tokens_per_image(self) -> np.ndarray:
    return np.diff(self.token_offsets)

  @property
  def token_image(self) -> np.ndarray:
    """Image index of every token (int32 [num_tokens])."""
    return np.repeat(np.arange(self.num_images, dtype=np.int32), self.tokens_per_image)

  def __repr__(self):
    return (f"ActivationStore({self.path!r}, tokens={self.num_tokens}, images={self.num_images}, "
            f"d={self.d}, dtype={self.dtype})")

  # -- open / verify
  @classmethod
  def open(cls, path: str, verify: bool = False, cache_bytes: int = 0) -> "ActivationStore":
    """Open and structurally check a store; `verify=True` also rereads and hashes every chunk."""
    path = os.fspath(path)
    mpath = os.path.join(path, MANIFEST)
    if not os.path.isdir(path):
      hint = ""
      if os.path.isdir(path + PARTIAL_SUFFIX):
        hint = f" (an unfinished extraction is in {path + PARTIAL_SUFFIX}: resume it)"
      raise StoreError(f"no activation store at {path}{hint}")
    if not os.path.isfile(mpath):
      raise StoreError(f"{path} has no {MANIFEST}: not an activation store or not finalized")
    try:
      with open(mpath) as f:
        manifest = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise StoreError(f"{mpath} is not valid JSON: {e}") from e
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
      raise StoreError(f"{mpath} lacks keys {missing}")
    if manifest["format_version"] != FORMAT_VERSION:
      raise StoreError(f"{mpath}: format_version {manifest['format_version']!r} is not supported "
                       f"(this reader knows {FORMAT_VERSION})")
    if manifest["dtype"] not in DTYPES:
      raise StoreError(f"{mpath}: dtype {manifest['dtype']!r} is not one of {sorted(DTYPES)}")
    n_tok, n_img, d, T = (manifest[k] for k in ("num_tokens", "num_images", "d", "chunk_tokens"))
    for k, v in (("num_tokens", n_tok), ("num_images", n_img), ("d", d), ("chunk_tokens", T)):
      if not isinstance(v, int) or v < (1 if k in ("d", "chunk_tokens") else 0):
        raise StoreError(f"{mpath}: {k}={v!r} is not a valid count")
    _check_manifest_fields(manifest, mpath)
    context = ts.Context({"cache_pool": {"total_bytes_limit": int(cache_bytes)}}) \
        if cache_bytes else None

    acts = _open_array(os.path.join(path, "activations"), "activations", context)
    if acts.dtype.numpy_dtype != DTYPES[manifest["dtype"]]:
      raise StoreError(f"activations array has dtype {acts.dtype.numpy_dtype} but the manifest "
                       f"says {manifest['dtype']}")
    if tuple(acts.shape) != (n_tok, d):
      raise StoreError(f"activations array has shape {tuple(acts.shape)} but the manifest says "
                       f"[num_tokens={n_tok}, d={d}]")
    grid = list(acts.chunk_layout.read_chunk.shape)
    if grid != [T, d]:
      raise StoreError(f"activations chunk shape {grid} does not match the manifest's "
                       f"chunk_tokens={T}, d={d}")
    checks = manifest["checksums"]
    n_chunks = _num_chunks(n_tok, T)
    if not isinstance(checks, dict) or len(checks.get("activations", ())) != n_chunks:
      got = len(checks.get("activations", ())) if isinstance(checks, dict) else None
      raise StoreError(f"manifest lists {got} activation chunk checksums, the array has "
                       f"{n_chunks} chunks")
    itemsize = DTYPES[manifest["dtype"]].itemsize
    want = T * d * itemsize + _CRC_BYTES
    for c in range(n_chunks):
      f = chunk_file(path, c)
      rows = min((c + 1) * T, n_tok) - c * T
      if not os.path.isfile(f) and checks["activations"][c] == zero_chunk_sha256(
          rows, d, manifest["dtype"]):
        continue   # an all-zero chunk that tensorstore did not store (older stores)
      if not os.path.isfile(f):
        raise StoreError(f"activation chunk {c} (tokens {c * T}..{min((c + 1) * T, n_tok)}) is "
                         f"missing: {f}")
      size = os.path.getsize(f)
      if size != want:
        raise StoreError(f"activation chunk {c} is truncated or corrupt: {f} has {size} bytes, "
                         f"expected {want}")

    offs_arr = _open_array(os.path.join(path, "token_offsets"), "token_offsets")
    offsets = _read(offs_arr, "token_offsets").astype(np.int64)
    if offsets.shape != (n_img + 1,):
      raise StoreError(f"token_offsets has shape {offsets.shape}, expected ({n_img + 1},) for "
                       f"num_images={n_img}")
    if offsets[0] != 0 or offsets[-1] != n_tok or np.any(np.diff(offsets) < 0):
      raise StoreError(f"token_offsets must start at 0, be non-decreasing and end at num_tokens="
                       f"{n_tok}; got start {offsets[0]}, end {offsets[-1]}")
    labels = _read(_open_array(os.path.join(path, "labels"), "labels"), "labels").astype(np.int64)
    if labels.shape != (n_img,):
      raise StoreError(f"labels has shape {labels.shape}, expected ({n_img},)")
    names = manifest["label_names"]
    if names is not None and n_img and (labels.min() < -1 or labels.max() >= len(names)):
      raise StoreError(f"labels range [{labels.min()}, {labels.max()}] does not fit the "
                       f"{len(names)} label_names")
    ipath = os.path.join(path, IMAGE_IDS)
    try:
      with open(ipath) as f:
        image_ids = json.load(f)["image_ids"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
      raise StoreError(f"cannot read image ids from {ipath}: {e}") from e
    if len(image_ids) != n_img:
      raise StoreError(f"{ipath} has {len(image_ids)} ids, expected num_images={n_img}")

    emb = None
    if manifest["embedding"] is not None:
      emb = _open_array(os.path.join(path, "embeddings"), "embeddings")
      dim = manifest["embedding"].get("dim")
      if tuple(emb.shape) != (n_img, dim):
        raise StoreError(f"embeddings array has shape {tuple(emb.shape)}, the manifest says "
                         f"[{n_img}, {dim}]")
    store = cls(path, manifest, acts, offsets, labels, list(image_ids), emb)
    if verify:
      store.verify()
    return store

  def verify(self, check_finite: bool = False) -> None:
    """Reread every chunk and compare its sha256 with the manifest (raises StoreError naming it).

    check_finite: also reject NaN/Inf in the same pass (a store whose checksums are valid can
    still hold them, e.g. written by another tool; training on it would diverge late).
    """
    checks = self.manifest["checksums"]
    T, N = self.chunk_tokens, self.num_tokens
    for c, want in enumerate(checks["activations"]):
      lo, hi = c * T, min((c + 1) * T, N)
      try:
        block = np.asarray(self._acts[lo:hi].read().result())
      except Exception as e:
        raise StoreError(f"activation chunk {c} (tokens {lo}..{hi}, {chunk_file(self.path, c)}) "
                         f"is corrupt: {e}") from e
      got = _sha256(block)
      if got != want:
        raise StoreError(f"activation chunk {c} (tokens {lo}..{hi}, {chunk_file(self.path, c)}) "
                         f"checksum mismatch: manifest {want[:12]}..., data {got[:12]}...")
      if check_finite:
        self._check_block_finite(block, lo)
    for name, value in (("token_offsets", self.token_offsets), ("labels", self.labels)):
      if _sha256(value.astype("<i8")) != checks.get(name):
        raise StoreError(f"{name} checksum mismatch in {self.path}")
    if _sha256_json(self.image_ids) != checks.get("image_ids"):
      raise StoreError(f"image_ids checksum mismatch in {self.path}")
    if self._emb is not None:
      got = _sha256(_read(self._emb, "embeddings").astype("<f4"))
      if got != checks.get("embeddings"):
        raise StoreError(f"embeddings checksum mismatch in {self.path}")

  def _check_block_finite(self, block: np.ndarray, lo: int) -> None:
    finite = np.isfinite(block.astype(np.float32, copy=False))
    if not finite.all():
      row = lo + int(np.nonzero(~finite.all(-1))[0][0])
      img = int(np.searchsorted(self.token_offsets, row, side="right")) - 1
      raise StoreError(f"{self.path}: activations hold NaN/Inf (first at token {row}, image "
                       f"{self.image_ids[img]!r}, chunk {row // self.chunk_tokens}); training on "
                       "them would diverge. Re-extract or drop those images")

  def check_finite(self, tokens: np.ndarray | None = None) -> None:
    """Raise StoreError at the first NaN/Inf; scans chunk by chunk (bounded memory), or the
    given in-memory copy of all tokens."""
    for c in range(self.num_chunks):
      lo, hi = c * self.chunk_tokens, min((c + 1) * self.chunk_tokens, self.num_tokens)
      block = tokens[lo:hi] if tokens is not None else self.read_tokens_native(lo, hi)
      self._check_block_finite(block, lo)

  # -- reading
  def _wrap_read(self, what: str, fn):
    try:
      return fn()
    except StoreError:
      raise
    except Exception as e:
      raise StoreError(f"{what} of {self.path} failed: {e}. Run "
                       f"ActivationStore.open(path, verify=True) to locate the bad chunk") from e

  def read_tokens_native(self, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) in the stored dtype (exact; float32/float16/ml_dtypes.bfloat16)."""
    start, stop = int(start), int(stop)
    if not 0 <= start <= stop <= self.num_tokens:
      raise ValueError(f"token range [{start}, {stop}) is outside [0, {self.num_tokens})")
    return self._wrap_read(f"reading tokens [{start}, {stop})",
                           lambda: np.asarray(self._acts[start:stop].read().result()))

  def read_tokens(self, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) as float32 [stop - start, d]."""
    return self.read_tokens_native(start, stop).astype(np.float32)

  def read_rows(self, indices) -> np.ndarray:
    """Rows at arbitrary token indices (any order, repeats allowed) as float32 [len, d].

    Whole chunks are read (each chunk is crc-sealed); for many random batches over a store that
    fits in memory, read it once with read_tokens(0, num_tokens) instead.
    """
    idx = np.asarray(indices)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
      raise ValueError(f"indices must be a 1-D integer array, got shape {idx.shape} dtype {idx.dtype}")
    if idx.size == 0:
      return np.zeros((0, self.d), np.float32)
    if idx.min() < 0 or idx.max() >= self.num_tokens:
      raise ValueError(f"token indices must lie in [0, {self.num_tokens}), got range "
                       f"[{idx.min()}, {idx.max()}]")
    uniq, inverse = np.unique(idx, return_inverse=True)
    rows = self._wrap_read(f"reading {uniq.size} rows",
                           lambda: np.asarray(self._acts[uniq].read().result()))
    return rows.astype(np.float32)[inverse]

  def image_tokens(self, i: int) -> np.ndarray:
    """Tokens of image i as float32 [n_i, d]."""
    if not 0 <= int(i) < self.num_images:
      raise IndexError(f"image index {i} outside [0, {self.num_images})")
    return self.read_tokens(self.token_offsets[i], self.token_offsets[i + 1])

  def embeddings(self) -> np.ndarray:
    """Reference image embeddings float32 [num_images, e] (SPEC section 4, HMS)."""
    if self._emb is None:
      raise StoreError(f"{self.path} has no reference embeddings; extract with "
                       f"{EMBEDDING_FLAG}=<backbone> (e.g. efficientnet_lite0) to add them")
    return _read(self._emb, "embeddings").astype(np.float32)

  def iter_chunks(self) -> Iterable[tuple[int, np.ndarray]]:
    """(start token, float32 block) over the store, one chunk at a time (bounded memory)."""
    for c in range(self.num_chunks):
      lo, hi = c * self.chunk_tokens, min((c + 1) * self.chunk_tokens, self.num_tokens)
      yield lo, self.read_tokens(lo, hi)

