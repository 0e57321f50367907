"""Write side of the activation store: streaming `StoreWriter` (resumable, atomic finalize)
and `write_store` for in-memory arrays."""
from __future__ import annotations

import json
import os
import queue
import shutil
import threading
import time
from typing import Sequence

import numpy as np

from csae_jax import fileio
from csae_jax import locks
from csae_jax.store.format import (
    _check_dtype, _create_array, _creation_info, DEFAULT_CHUNK_TOKENS, DTYPES,
    EMBEDDING_CHUNK_ROWS, FORMAT_VERSION, _GROW_SHAPE, IMAGE_IDS, IMAGES_LOG, MANIFEST,
    _num_chunks, _open_array, PARTIAL_SUFFIX, PROGRESS, _sha256, _sha256_json, SKIPPED_LOG,
    StoreError, _write_json_atomic, is_store_dir)
from csae_jax.store.reader import ActivationStore


class StoreWriter:
  """Streaming writer: `add_batch` images in order, `finalize` once.

  Memory is bounded by one chunk of buffered tokens (plus the current batch) and `queue_chunks`
  chunks in flight. After
  every written chunk the writer commits the last batch boundary whose tokens are all on disk
  (progress.json, atomic); `resume=True` reopens `<path>.partial`, rereads the head of the
  first unfinished chunk and reports `resume_cursor`, the caller's source position to restart
  from. `fingerprint` (a JSON dict of the run settings) must match on resume.
  """

  def __init__(self, path: str, *, d: int, dtype: str = "float32",
               chunk_tokens: int = DEFAULT_CHUNK_TOKENS, model: str | None = None,
               hooked_module: str | None = None, split: str | None = None,
               label_names: Sequence[str] | None = None, embedding_dim: int | None = None,
               embedding_backbone: str | None = None, manifest_extra: dict | None = None,
               fingerprint: dict | None = None, overwrite: bool = False, resume: bool = False,
               queue_chunks: int = 2, versions: dict | None = None):
    self.path = os.path.abspath(os.fspath(path))
    self.partial = self.path + PARTIAL_SUFFIX
    if not isinstance(d, (int, np.integer)) or d <= 0:
      raise ValueError(f"d must be a positive integer, got {d!r}")
    if not isinstance(chunk_tokens, (int, np.integer)) or chunk_tokens <= 0:
      raise ValueError(f"chunk_tokens must be a positive integer, got {chunk_tokens!r}")
    if embedding_dim is not None and (not isinstance(embedding_dim, (int, np.integer))
                                      or embedding_dim <= 0):
      raise ValueError(f"embedding_dim must be a positive integer or None, got {embedding_dim!r}")
    self.d, self.T = int(d), int(chunk_tokens)
    self.dtype = _check_dtype(dtype)
    self.np_dtype = DTYPES[self.dtype]
    self.embedding_dim = None if embedding_dim is None else int(embedding_dim)
    self.overwrite = overwrite
    self.fingerprint = json.loads(json.dumps(fingerprint or {}))
    self.meta = {"model": model, "hooked_module": hooked_module, "split": split,
                 "label_names": None if label_names is None else list(label_names),
                 "embedding": None if embedding_dim is None else
                 {"backbone": embedding_backbone, "dim": int(embedding_dim)},
                 "extra": json.loads(json.dumps(manifest_extra or {})), "versions": versions or {}}
    if os.path.exists(self.path) and not overwrite:
      raise StoreError(f"{self.path} already exists; pass overwrite=True (--overwrite) to replace it")
    if overwrite:
      check_overwrite(self.path)
    # one writer per output; released by close() / finalize()
    self._lock = locks.output_lock(self.path).acquire()

    self._finished_partial = False
    # state of the committed prefix
    self._committed_sums: list[str] = []
    self.offsets: list[int] = [0]
    self.labels: list[int] = []
    self.image_ids: list[str] = []
    self._id_set: set[str] = set()
    self.skipped: list[dict] = []
    self.cursor = 0
    self.buffer_start = 0                       # first token of the (unwritten) buffer
    self._buffer: list[np.ndarray] = []
    self._buffered = 0
    try:
      self._open_partial(resume, overwrite)
    except BaseException:
      self._lock.release()
      raise
    # writer thread
    self.write_seconds = 0.0      # time the writer thread spent writing (overlaps compute)
    self.blocked_seconds = 0.0    # caller's time inside add_batch/finalize (checks, copies, waits)
    self.finalize_seconds = 0.0   # of which finalize (tail chunk, small arrays, manifest, rename)
    # small items (logs, boundaries) never block; chunks in flight are bounded by a semaphore
    self._queue: queue.Queue = queue.Queue()
    self._slots = threading.BoundedSemaphore(max(1, int(queue_chunks)))
    self._error: BaseException | None = None
    self._boundaries: list[dict] = []
    self._written_tokens = self.buffer_start
    self._chunks_since_commit = 0
    self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
    self._thread.start()
    self._closed = False

  def _open_partial(self, resume: bool, overwrite: bool) -> None:
    """Resume `<path>.partial`, or start it afresh; sets the committed prefix state."""
    head = None
    if os.path.isdir(self.partial):
      if not resume and not overwrite:
        raise StoreError(f"an unfinished extraction exists at {self.partial}; resume it "
                         f"(resume=True, --resume) or start over (overwrite=True, --overwrite)")
      if resume:
        head = self._load_progress()
      else:
        shutil.rmtree(self.partial)
    if head is None and not self._finished_partial:
      os.makedirs(self.partial)
      self._acts = _create_array(os.path.join(self.partial, "activations"), self.dtype,
                                 (_GROW_SHAPE, self.d), (self.T, self.d))
      self._emb = None
      if self.embedding_dim:
        self._emb = _create_array(os.path.join(self.partial, "embeddings"), "float32",
                                  (_GROW_SHAPE, self.embedding_dim),
                                  (EMBEDDING_CHUNK_ROWS, self.embedding_dim))
      self._write_progress(self._snapshot())
      open(os.path.join(self.partial, IMAGES_LOG), "w").close()
      open(os.path.join(self.partial, SKIPPED_LOG), "w").close()
    elif head is not None:
      self._buffer = [head] if len(head) else []
      self._buffered = len(head)
    self._images_log = None if self._finished_partial else \
        open(os.path.join(self.partial, IMAGES_LOG), "a")
    self._skipped_log = None if self._finished_partial else \
        open(os.path.join(self.partial, SKIPPED_LOG), "a")

  # -- progress (commit / resume)
  def _snapshot(self) -> dict:
    return {"images": len(self.labels), "tokens": self.offsets[-1], "cursor": self.cursor,
            "skipped": len(self.skipped)}

  def _write_progress(self, boundary: dict) -> None:
    n_full = boundary["tokens"] // self.T
    _write_json_atomic(os.path.join(self.partial, PROGRESS), {
        "format_version": FORMAT_VERSION, "fingerprint": self.fingerprint, "d": self.d,
        "dtype": self.dtype, "chunk_tokens": self.T, "embedding_dim": self.embedding_dim,
        "boundary": boundary, "chunk_sums": self._committed_sums[:n_full]})

  def _load_progress(self):
    ppath = os.path.join(self.partial, PROGRESS)
    if not os.path.isfile(ppath):
      if os.path.isfile(os.path.join(self.partial, MANIFEST)):
        self._finished_partial = True     # killed between finalize and rename
        return None
      raise StoreError(f"{self.partial} has no {PROGRESS}; cannot resume (use --overwrite)")
    with open(ppath) as f:
      prog = json.load(f)
    mine = {"d": self.d, "dtype": self.dtype, "chunk_tokens": self.T,
            "embedding_dim": self.embedding_dim, "fingerprint": self.fingerprint}
    diff = [k for k in mine if prog.get(k) != mine[k]]
    if "fingerprint" in diff:
      a, b = prog.get("fingerprint") or {}, self.fingerprint
      diff += [f"fingerprint.{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
               if a.get(k) != b.get(k)]
    if diff:
      raise StoreError(f"cannot resume {self.partial}: settings differ from the interrupted run "
                       f"({', '.join(map(str, diff))}); use --overwrite to start over")
    b = prog["boundary"]
    m, p, s = b["images"], b["tokens"], b["skipped"]
    images = _read_jsonl(os.path.join(self.partial, IMAGES_LOG), m)
    skipped = _read_jsonl(os.path.join(self.partial, SKIPPED_LOG), s)
    if len(images) < m or len(skipped) < s:
      raise StoreError(f"{self.partial}: progress logs are shorter than the committed state "
                       f"({len(images)}/{m} images, {len(skipped)}/{s} skipped)")
    _rewrite_jsonl(os.path.join(self.partial, IMAGES_LOG), images)
    _rewrite_jsonl(os.path.join(self.partial, SKIPPED_LOG), skipped)
    for rec in images:
      self.image_ids.append(rec["id"])
      self.labels.append(int(rec["label"]))
      self.offsets.append(self.offsets[-1] + int(rec["n"]))
    self._id_set = set(self.image_ids)
    self.skipped = skipped
    if self.offsets[-1] != p:
      raise StoreError(f"{self.partial}: image log sums to {self.offsets[-1]} tokens, progress "
                       f"says {p}")
    self.cursor = int(b["cursor"])
    self._acts = _open_array(os.path.join(self.partial, "activations"), "partial activations")
    self._emb = (_open_array(os.path.join(self.partial, "embeddings"), "partial embeddings")
                 if self.embedding_dim else None)
    first = p // self.T
    self._committed_sums = list(prog["chunk_sums"][:first])
    self.buffer_start = first * self.T
    try:
      head = np.asarray(self._acts[self.buffer_start:p].read().result())
    except Exception as e:
      raise StoreError(f"{self.partial}: committed chunk {first} is unreadable ({e}); "
                       f"use --overwrite to start over") from e
    return head

  @property
  def resume_cursor(self) -> int:
    """Source position the caller continues from (0 for a fresh run)."""
    return self.cursor

  @property
  def num_images(self) -> int:
    return len(self.labels)

  @property
  def done(self) -> bool:
    """True when resuming found a finished store waiting only for the final rename."""
    return self._finished_partial

  # -- writer thread
  def _run(self):
    while True:
      item = self._queue.get()
      if item is None:
        return
      if self._error is not None:
        if item[0] == "chunk":
          self._slots.release()
        continue
      t0 = time.perf_counter()
      try:
        self._handle(item)
      except BaseException as e:  # surfaced to the caller at the next call
        self._error = e
      finally:
        if item[0] == "chunk":
          self._slots.release()
      self.write_seconds += time.perf_counter() - t0

  def _handle(self, item):
    kind = item[0]
    if kind == "chunk":
      _, c, block = item
      block = block.astype(self.np_dtype, copy=False)
      lo = c * self.T
      self._acts[lo:lo + len(block)].write(block).result()
      sums = self._committed_sums
      del sums[c:]
      sums.append(_sha256(block))
      self._written_tokens = lo + len(block)
      self._chunks_since_commit += 1
      self._maybe_commit()
    elif kind == "emb":
      _, start, rows = item
      self._emb[start:start + len(rows)].write(rows).result()
    elif kind == "log":
      _, images, skipped = item
      for rec in images:
        self._images_log.write(json.dumps(rec) + "\n")
      for rec in skipped:
        self._skipped_log.write(json.dumps(rec) + "\n")
    elif kind == "boundary":
      self._boundaries.append(item[1])
      self._maybe_commit()
    elif kind == "call":
      item[1]()

  def _maybe_commit(self):
    if not self._chunks_since_commit:
      return
    best = None
    while self._boundaries and self._boundaries[0]["tokens"] <= self._written_tokens:
      best = self._boundaries.pop(0)
    if best is None:
      return
    for f in (self._images_log, self._skipped_log):
      f.flush()
      os.fsync(f.fileno())
    self._write_progress(best)
    self._chunks_since_commit = 0

  def _put(self, item):
    if item[0] == "chunk":        # wait for a free slot (bounded memory)
      self._slots.acquire()
    self._queue.put(item)

  def _raise_pending(self):
    if self._error is not None:
      err = self._error
      raise StoreError(f"writing {self.partial} failed: {err}") from err

  # -- public
  def add_batch(self, activations: np.ndarray, tokens_per_image: Sequence[int],
                labels: Sequence[int], image_ids: Sequence[str], embeddings=None,
                skipped: Sequence[dict] = (), cursor: int | None = None) -> None:
    """Append images (their tokens concatenated in order) and the source position after them.

    skipped: records ({"id", "reason"}) of source items that could not be read, listed in the
    manifest. cursor: the caller's source position after this batch (resume restarts there).
    The writer keeps references to `activations` until written: do not modify them afterwards.
    """
    t0 = time.perf_counter()
    try:
      self._add_batch(activations, tokens_per_image, labels, image_ids, embeddings, skipped,
                      cursor)
    finally:
      self.blocked_seconds += time.perf_counter() - t0

  def _add_batch(self, activations, tokens_per_image, labels, image_ids, embeddings, skipped,
                 cursor):
    self._raise_pending()
    if self._closed or self._finished_partial:
      raise StoreError(f"writer for {self.path} is closed")
    acts = np.asarray(activations)
    counts = np.asarray(tokens_per_image, dtype=np.int64).reshape(-1)
    b = len(counts)
    if acts.ndim != 2 or acts.shape[1] != self.d:
      raise ValueError(f"activations must be [tokens, d={self.d}], got shape {acts.shape}")
    if not (np.issubdtype(acts.dtype, np.floating) or acts.dtype == DTYPES["bfloat16"]):
      raise ValueError(f"activations must be floating point, got {acts.dtype}")
    if np.any(counts < 0) or counts.sum() != len(acts):
      raise ValueError(f"tokens_per_image {counts.tolist()[:8]}... must be >= 0 and sum to the "
                       f"{len(acts)} activation rows")
    if len(labels) != b or len(image_ids) != b:
      raise ValueError(f"{b} images but {len(labels)} labels and {len(image_ids)} image ids")
    if acts.size and not np.isfinite(acts.astype(np.float32, copy=False)).all():
      bad_row = int(np.nonzero(~np.isfinite(acts.astype(np.float32)).all(-1))[0][0])
      img = int(np.searchsorted(np.cumsum(counts), bad_row, side="right"))
      raise ValueError(f"activations of image {image_ids[img]!r} contain NaN/Inf (row {bad_row} "
                       f"of the batch); nothing of this batch was written")
    ids = [str(i) for i in image_ids]
    dup = [i for i in ids if i in self._id_set]
    if dup or len(set(ids)) != len(ids):
      raise ValueError(f"duplicate image ids {dup[:5] or ids[:5]}")
    if (embeddings is None) != (self.embedding_dim is None):
      raise ValueError("embeddings must be given iff the writer was created with embedding_dim")
    if embeddings is not None:
      embeddings = np.asarray(embeddings, np.float32)
      if embeddings.shape != (b, self.embedding_dim):
        raise ValueError(f"embeddings must be [{b}, {self.embedding_dim}], got {embeddings.shape}")
      if not np.isfinite(embeddings).all():
        raise ValueError("embeddings contain NaN/Inf")
    for rec in skipped:
      if not isinstance(rec, dict) or "id" not in rec:
        raise ValueError(f"skipped records must be dicts with an 'id', got {rec!r}")
    labels = [int(x) for x in labels]

    # accepted: update the in-memory state and stream
    start_img = len(self.labels)
    recs = [{"id": i, "label": l, "n": int(n)} for i, l, n in zip(ids, labels, counts)]
    self.image_ids += ids
    self._id_set.update(ids)
    self.labels += labels
    for n in counts:
      self.offsets.append(self.offsets[-1] + int(n))
    self.skipped += [json.loads(json.dumps(r)) for r in skipped]
    if cursor is not None:
      self.cursor = int(cursor)
    if len(acts):
      self._buffer.append(acts)
      self._buffered += len(acts)
    while self._buffered >= self.T:
      block = self._take(self.T)
      self._put(("chunk", self.buffer_start // self.T, block))
      self.buffer_start += self.T
    if embeddings is not None and b:
      self._put(("emb", start_img, embeddings))
    self._put(("log", recs, list(skipped)))
    self._put(("boundary", self._snapshot()))

  def _take(self, n: int) -> np.ndarray:
    whole = np.concatenate(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
    block, rest = whole[:n], whole[n:]
    self._buffer = [rest] if len(rest) else []
    self._buffered = len(rest)
    return np.array(block, copy=True) if rest.size else block

  def _drain(self):
    done = threading.Event()
    self._put(("call", done.set))
    done.wait()
    self._raise_pending()

  def close(self, release: bool = True) -> None:
    """Stop the writer thread, keeping the partial directory (resumable); release the lock."""
    if self._thread.is_alive():
      self._queue.put(None)
      self._thread.join()
    for f in (self._images_log, self._skipped_log):
      if f is not None and not f.closed:
        f.close()
    self._closed = True
    if release:
      self._lock.release()

  def finalize(self) -> str:
    """Write the tail chunk, the small arrays and the manifest; rename into place atomically."""
    try:
      return self._finalize()
    finally:
      self._lock.release()

  def _finalize(self) -> str:
    if self._finished_partial:
      self.close(release=False)
      ActivationStore.open(self.partial)
      return self._rename()
    self._raise_pending()
    t_fin = time.perf_counter()
    if self._buffered:
      block = self._take(self._buffered)
      self._put(("chunk", self.buffer_start // self.T, block))
      self.buffer_start += len(block)
    self._drain()
    self.close(release=False)
    n_tok, n_img = self.offsets[-1], len(self.labels)
    sums = list(self._committed_sums[:_num_chunks(n_tok, self.T)])
    if len(sums) != _num_chunks(n_tok, self.T):
      raise StoreError(f"internal: {len(sums)} chunk checksums for {n_tok} tokens")
    acts = self._acts.resize(exclusive_max=[n_tok, self.d], resize_metadata_only=True,
                             shrink_only=True).result()
    del acts
    offsets = np.asarray(self.offsets, np.int64)
    labels = np.asarray(self.labels, np.int64)
    for name, value in (("token_offsets", offsets), ("labels", labels)):
      arr = _create_array(os.path.join(self.partial, name), "int64", (len(value),),
                          (max(1, min(len(value), 1 << 20)),))
      arr.write(value).result()
    checks = {"algorithm": "sha256", "activations": sums,
              "token_offsets": _sha256(offsets.astype("<i8")),
              "labels": _sha256(labels.astype("<i8")), "image_ids": _sha256_json(self.image_ids)}
    _write_json_atomic(os.path.join(self.partial, IMAGE_IDS), {"image_ids": self.image_ids})
    if self._emb is not None:
      emb = self._emb.resize(exclusive_max=[n_img, self.embedding_dim],
                             resize_metadata_only=True, shrink_only=True).result()
      checks["embeddings"] = _sha256(np.asarray(emb.read().result()).astype("<f4"))
    names = self.meta["label_names"]
    if names is not None and labels.size and (labels.min() < -1 or labels.max() >= len(names)):
      raise StoreError(f"labels range [{labels.min()}, {labels.max()}] does not fit the "
                       f"{len(names)} label_names")
    manifest = {"format_version": FORMAT_VERSION, "model": self.meta["model"],
                "hooked_module": self.meta["hooked_module"], "d": self.d, "dtype": self.dtype,
                "num_tokens": int(n_tok), "num_images": int(n_img), "split": self.meta["split"],
                "created": _creation_info(self.meta["versions"]), "chunk_tokens": self.T,
                "checksums": checks, "label_names": names, "embedding": self.meta["embedding"],
                "skipped_images": self.skipped}
    clash = set(self.meta["extra"]) & set(manifest)
    if clash:
      raise ValueError(f"manifest_extra may not redefine {sorted(clash)}")
    manifest.update(self.meta["extra"])
    _write_json_atomic(os.path.join(self.partial, MANIFEST), manifest)
    for name in (PROGRESS, IMAGES_LOG, SKIPPED_LOG):
      p = os.path.join(self.partial, name)
      if os.path.exists(p):
        os.remove(p)
    path = self._rename()
    self.finalize_seconds = time.perf_counter() - t_fin
    self.blocked_seconds += self.finalize_seconds
    return path

  def _rename(self) -> str:
    if os.path.exists(self.path) and not self.overwrite:
      raise StoreError(f"{self.path} appeared while writing; pass overwrite=True to replace it "
                       f"(the finished store is kept in {self.partial})")
    fileio.replace_dir(self.partial, self.path)
    return self.path

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
    return False


def _read_jsonl(path: str, limit: int) -> list[dict]:
  out = []
  if not os.path.isfile(path):
    return out
  with open(path) as f:
    for line in f:
      if len(out) >= limit:
        break
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError:
        break
  return out


def _rewrite_jsonl(path: str, recs: list[dict]) -> None:
  fileio.write_lines_atomic(path, recs)


def check_overwrite(path: str) -> None:
  """overwrite=True replaces a store (or an empty directory), never anything else (row 4)."""
  try:
    fileio.check_overwrite_target(path, lambda p: is_store_dir(str(p)), "an activation store")
  except FileExistsError as e:
    raise StoreError(str(e)) from None


# ----------------------------------------------------------------------------- conveniences
def write_store(path: str, activations, token_offsets, labels=None, image_ids=None,
                embeddings=None, label_names=None, manifest_extra=None, overwrite=False, *,
                dtype: str | None = None, chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
                model: str | None = None, hooked_module: str | None = None,
                split: str | None = None, embedding_backbone: str | None = None) -> str:
  """Write in-memory arrays as a store (tests, demos, imports). Returns the path."""
  acts = np.asarray(activations)
  if acts.ndim != 2:
    raise ValueError(f"activations must be 2-D [tokens, d], got shape {acts.shape}")
  offsets = np.asarray(token_offsets, np.int64)
  if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(acts) \
      or np.any(np.diff(offsets) < 0):
    raise ValueError(f"token_offsets must be non-decreasing from 0 to {len(acts)}, got "
                     f"{offsets[:3].tolist()}...{offsets[-3:].tolist()}")
  n_img = len(offsets) - 1
  labels = np.zeros(n_img, np.int64) if labels is None else np.asarray(labels, np.int64)
  image_ids = [str(i) for i in range(n_img)] if image_ids is None else list(image_ids)
  if dtype is None:
    dtype = acts.dtype.name if acts.dtype.name in DTYPES else "float32"
  emb = None if embeddings is None else np.asarray(embeddings, np.float32)
  w = StoreWriter(path, d=acts.shape[1], dtype=dtype, chunk_tokens=chunk_tokens, model=model,
                  hooked_module=hooked_module, split=split, label_names=label_names,
                  embedding_dim=None if emb is None else emb.shape[1],
                  embedding_backbone=embedding_backbone, manifest_extra=manifest_extra,
                  overwrite=overwrite)
  try:
    step = 1024
    for i in range(0, max(n_img, 1), step):
      j = min(i + step, n_img)
      w.add_batch(acts[offsets[i]:offsets[j]] if n_img else acts[:0], np.diff(offsets[i:j + 1]),
                  labels[i:j], image_ids[i:j], None if emb is None else emb[i:j], cursor=j)
    return w.finalize()
  except BaseException:
    w.close()
    shutil.rmtree(w.partial, ignore_errors=True)   # nothing to resume for in-memory input
    raise
  finally:
    w.close()
