"""Chunk-window shuffle for activation stores larger than host memory.

The global batch rule (data.BatchRule) draws every batch from the whole store, which is right
when the store sits in RAM; from disk it turns each batch into B random row reads spread over
every chunk. Here the stream order is built from the store's chunks instead:

  epoch e:   the chunks are put in a keyed pseudo-random order and cut into windows of
             `window_chunks` consecutive chunks (in that order);
  window w:  its tokens (the rows of its chunks) are permuted by a keyed Feistel permutation;
  position:  p -> (e, w, r) -> token row.

So every token is seen once per epoch, each epoch in a fresh order, and the index of any
position is a pure function of (seed, p): resuming at step s needs nothing but s, exactly as
for the global rule. A batch touches at most two windows (one unless it straddles a boundary),
so a reader holds two windows of chunks and reads the next window ahead in a thread while the
current one is consumed: each chunk is read once per epoch, sequentially.

The price is a weaker shuffle: tokens of one batch come from `window_chunks` chunks, not from
the whole store. Chunks hold consecutive images of the extraction order, so a window should
span many images (the default window is 1 GiB of rows); docs/design.md discusses it.
"""
from __future__ import annotations

import collections
import threading

import numpy as np

from csae_jax.trainer.data import FeistelPermutation
from csae_jax.trainer.data import StoreSource


def _keys(seed: int, *words: int) -> np.ndarray:
  return np.random.SeedSequence([int(seed), *[int(w) for w in words], 0x3D0C]).generate_state(
      4, np.uint64)


class WindowRule:
  """Global batch indices of step s under the chunk-window shuffle (module docstring)."""

  def __init__(self, num_tokens: int, batch_size: int, seed: int, chunk_tokens: int,
               window_chunks: int):
    for name, v in (("num_tokens", num_tokens), ("batch_size", batch_size),
                    ("chunk_tokens", chunk_tokens), ("window_chunks", window_chunks)):
      if int(v) <= 0:
        raise ValueError(f"{name} must be positive, got {v}")
    self.num_tokens, self.batch_size, self.seed = int(num_tokens), int(batch_size), int(seed)
    self.chunk_tokens = int(chunk_tokens)
    self.num_chunks = -(-self.num_tokens // self.chunk_tokens)
    self.window_chunks = min(int(window_chunks), self.num_chunks)
    self.num_windows = -(-self.num_chunks // self.window_chunks)
    sizes = np.full(self.num_chunks, self.chunk_tokens, np.int64)
    sizes[-1] = self.num_tokens - self.chunk_tokens * (self.num_chunks - 1)
    self.chunk_sizes = sizes
    self._epochs: collections.OrderedDict = collections.OrderedDict()
    self._perms: collections.OrderedDict = collections.OrderedDict()

  # ------------------------------------------------------------------ epoch layout
  def epoch_layout(self, epoch: int):
    """(chunk order, window start positions [num_windows + 1]) of an epoch."""
    if epoch not in self._epochs:
      order = FeistelPermutation(self.num_chunks, _keys(self.seed, epoch, 1))(
          np.arange(self.num_chunks, dtype=np.uint64)).astype(np.int64)
      per_window = np.add.reduceat(self.chunk_sizes[order],
                                   np.arange(0, self.num_chunks, self.window_chunks))
      starts = np.concatenate([[0], np.cumsum(per_window)])
      self._epochs[epoch] = (order, starts)
      while len(self._epochs) > 3:
        self._epochs.popitem(last=False)
    return self._epochs[epoch]

  def window_chunk_ids(self, epoch: int, window: int) -> np.ndarray:
    """The store chunks of window `window` of `epoch`, in window order."""
    order, _ = self.epoch_layout(epoch)
    return order[window * self.window_chunks:(window + 1) * self.window_chunks]

  def next_window(self, epoch: int, window: int) -> tuple[int, int]:
    return (epoch, window + 1) if window + 1 < self.num_windows else (epoch + 1, 0)

  def _window_perm(self, epoch: int, window: int, size: int) -> FeistelPermutation:
    key = (epoch, window)
    if key not in self._perms:
      self._perms[key] = FeistelPermutation(size, _keys(self.seed, epoch, 2, window))
      while len(self._perms) > 8:
        self._perms.popitem(last=False)
    return self._perms[key]

  # ------------------------------------------------------------------ positions -> rows
  def locate(self, step: int):
    """(epoch, window, rank within window) of each position of the batch of `step`."""
    pos = np.arange(self.batch_size, dtype=np.int64) + np.int64(step) * self.batch_size
    epoch = pos // self.num_tokens
    offset = pos % self.num_tokens
    window = np.empty_like(pos)
    rank = np.empty_like(pos)
    for e in np.unique(epoch):
      sel = epoch == e
      _, starts = self.epoch_layout(int(e))
      w = np.searchsorted(starts, offset[sel], side="right") - 1
      window[sel], rank[sel] = w, offset[sel] - starts[w]
    return epoch, window, rank

  def indices(self, step: int) -> np.ndarray:
    epoch, window, rank = self.locate(step)
    out = np.empty(self.batch_size, np.int64)
    for e, w in sorted(set(zip(epoch.tolist(), window.tolist()))):
      sel = (epoch == e) & (window == w)
      chunks = self.window_chunk_ids(e, w)
      sizes = self.chunk_sizes[chunks]
      within = np.concatenate([[0], np.cumsum(sizes)])
      r = self._window_perm(e, w, int(within[-1]))(rank[sel].astype(np.uint64)).astype(np.int64)
      j = np.searchsorted(within, r, side="right") - 1
      out[sel] = chunks[j] * self.chunk_tokens + (r - within[j])
    return out

  def windows_of(self, step: int) -> list[tuple[int, int]]:
    epoch, window, _ = self.locate(step)
    return sorted(set(zip(epoch.tolist(), window.tolist())))


class WindowedStoreSource(StoreSource):
  """Rows of a store read chunk by chunk into a small cache, the next window read ahead.

  `read_rows` accepts any indices (it reads whatever chunks they need), so it is exact under any
  rule; it is fast under the WindowRule of `make_rule`: then each chunk is read once per epoch,
  and while one window is consumed a thread loads the next (`after_step`).
  """

  def __init__(self, store, window_chunks: int, description: str, read_ahead: bool = True):
    super().__init__(store, description)
    self.chunk_tokens = int(store.chunk_tokens)
    self.window_chunks = max(1, min(int(window_chunks), int(store.num_chunks)))
    self.read_ahead = read_ahead
    self.rule: WindowRule | None = None
    self._chunks: collections.OrderedDict = collections.OrderedDict()
    self._capacity = 3 * self.window_chunks       # current, next, and one straddling window
    self._lock = threading.Lock()
    self._loading: dict[int, threading.Event] = {}
    self._ahead: threading.Thread | None = None
    self._ahead_error: BaseException | None = None
    self.chunks_read = 0

  def make_rule(self, batch_size: int, seed: int, attach: bool = True) -> WindowRule:
    """The chunk-window rule over this store; `attach` makes it drive the read-ahead."""
    rule = WindowRule(self.num_tokens, batch_size, seed, self.chunk_tokens, self.window_chunks)
    if attach:
      self.rule = rule
    return rule

  def _load_chunk(self, c: int) -> np.ndarray:
    with self._lock:
      if c in self._chunks:
        self._chunks.move_to_end(c)
        return self._chunks[c]
      event = self._loading.get(c)
      mine = event is None
      if mine:
        event = self._loading[c] = threading.Event()
    if not mine:
      event.wait()
      return self._load_chunk(c)   # cached now, or the other reader failed: try ourselves
    try:
      lo = c * self.chunk_tokens
      rows = self.store.read_tokens_native(lo, min(lo + self.chunk_tokens, self.num_tokens))
      with self._lock:
        self._chunks[c] = rows
        self.chunks_read += 1
        while len(self._chunks) > self._capacity:
          self._chunks.popitem(last=False)
      return rows
    finally:
      with self._lock:
        self._loading.pop(c, None)
      event.set()

  def _prefetch_window(self, epoch: int, window: int) -> None:
    try:
      for c in self.rule.window_chunk_ids(epoch, window).tolist():
        self._load_chunk(int(c))
    except BaseException as e:  # reported by the next read
      self._ahead_error = e

  def after_step(self, step: int) -> None:
    """Start loading the window after the last one the batch of `step` touched."""
    if self.rule is None or not self.read_ahead:
      return
    if self._ahead is not None and self._ahead.is_alive():
      return
    e, w = self.rule.next_window(*self.rule.windows_of(step)[-1])
    self._ahead = threading.Thread(target=self._prefetch_window, args=(e, w), daemon=True)
    self._ahead.start()

  def read_rows(self, indices: np.ndarray) -> np.ndarray:
    if self._ahead_error is not None:
      err, self._ahead_error = self._ahead_error, None
      raise err
    indices = np.asarray(indices, np.int64)
    chunk_of = indices // self.chunk_tokens
    out = np.empty((len(indices), self.d), np.float32)
    for c in np.unique(chunk_of).tolist():
      sel = chunk_of == c
      out[sel] = self._load_chunk(int(c))[indices[sel] - c * self.chunk_tokens]
    return out


def window_chunks_for(store, window_bytes: int) -> int:
  """How many chunks make a window of about `window_bytes` bytes (at least one)."""
  itemsize = 2 if str(store.dtype) in ("float16", "bfloat16") else 4
  chunk_bytes = int(store.chunk_tokens) * int(store.d) * itemsize
  return max(1, int(window_bytes) // chunk_bytes)
