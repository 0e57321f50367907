"""Input pipeline: token sources, the stateless batch rule, per-process reads, prefetch, scaling.

Batch rule. The global batch of step s holds the tokens at positions s*B .. s*B+B-1 of an endless
stream; position p is token perm_e(p mod N) with e = p // N, where perm_e is a pseudo-random
permutation of [0, N) keyed by (seed, e): every token once per epoch, in a fresh order each epoch.
perm_e is a 4-round Feistel network on [0, 2^m) (2^m >= N, m even) with cycle-walking, so a batch
costs O(B) and needs no state: resuming at step s needs nothing but s.

Each process reads only the rows of the global batch that its own devices hold
(`jax.make_array_from_callback`), in a background thread `prefetch` batches ahead.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import queue
import threading
from typing import Callable

import jax
import numpy as np

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


# ----------------------------------------------------------------------------- batch rule
def _mix64(x: np.ndarray, key: np.uint64) -> np.ndarray:
  """splitmix64 finaliser of x ^ key (wrapping uint64 arithmetic)."""
  with np.errstate(over="ignore"):
    z = x ^ key
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class FeistelPermutation:
  """A keyed bijection of [0, n) evaluated pointwise (no table)."""

  ROUNDS = 4

  def __init__(self, n: int, keys: np.ndarray):
    if n <= 0:
      raise ValueError(f"cannot permute an empty range (n={n})")
    bits = max(2, math.ceil(math.log2(n)) if n > 1 else 2)
    bits += bits % 2
    self.n, self.half = n, bits // 2
    self.mask = np.uint64((1 << self.half) - 1)
    self.keys = [np.uint64(k) for k in keys[:self.ROUNDS]]

  def _round_trip(self, x: np.ndarray) -> np.ndarray:
    h = np.uint64(self.half)
    left, right = x >> h, x & self.mask
    for key in self.keys:
      left, right = right, left ^ (_mix64(right, key) & self.mask)
    return (left << h) | right

  def __call__(self, x: np.ndarray) -> np.ndarray:
    y = self._round_trip(np.asarray(x, np.uint64))
    out = y >= np.uint64(self.n)
    while out.any():  # cycle-walking: apply again until inside [0, n); at most a few passes
      y[out] = self._round_trip(y[out])
      out = y >= np.uint64(self.n)
    return y


class BatchRule:
  """Global batch indices of step s: a pure function of (seed, s) (module docstring)."""

  def __init__(self, num_tokens: int, batch_size: int, seed: int):
    self.num_tokens, self.batch_size, self.seed = int(num_tokens), int(batch_size), int(seed)
    self._perms: dict[int, FeistelPermutation] = {}

  def _perm(self, epoch: int) -> FeistelPermutation:
    if epoch not in self._perms:
      if len(self._perms) > 4:
        self._perms.clear()
      keys = np.random.SeedSequence([self.seed, epoch, 0xC5AE]).generate_state(4, np.uint64)
      self._perms[epoch] = FeistelPermutation(self.num_tokens, keys)
    return self._perms[epoch]

  def indices(self, step: int) -> np.ndarray:
    pos = np.arange(self.batch_size, dtype=np.uint64) + np.uint64(step) * np.uint64(self.batch_size)
    epoch = pos // np.uint64(self.num_tokens)
    offset = pos % np.uint64(self.num_tokens)
    out = np.empty(self.batch_size, np.int64)
    for e in np.unique(epoch):
      sel = epoch == e
      out[sel] = self._perm(int(e))(offset[sel]).astype(np.int64)
    return out


# ----------------------------------------------------------------------------- sources
class ArraySource:
  """Tokens held in host memory (planted data, or a store read whole)."""

  def __init__(self, tokens: np.ndarray, description: str):
    self.tokens = tokens
    self.description = description

  @property
  def d(self) -> int:
    return int(self.tokens.shape[1])

  @property
  def num_tokens(self) -> int:
    return int(self.tokens.shape[0])

  def read_rows(self, indices: np.ndarray) -> np.ndarray:
    return np.asarray(self.tokens[indices], np.float32)

  def all_tokens(self) -> np.ndarray:
    return np.asarray(self.tokens, np.float32)


class StoreSource:
  """Rows gathered from an activation store on demand (csae_jax.store)."""

  def __init__(self, store, description: str):
    self.store = store
    self.description = description

  @property
  def d(self) -> int:
    return int(self.store.d)

  @property
  def num_tokens(self) -> int:
    return int(self.store.num_tokens)

  def read_rows(self, indices: np.ndarray) -> np.ndarray:
    return np.asarray(self.store.read_rows(indices), np.float32)

  def all_tokens(self) -> np.ndarray:
    return np.asarray(self.store.read_tokens(0, self.num_tokens), np.float32)


def _store_bytes(store) -> int:
  itemsize = 2 if str(store.dtype) in ("float16", "bfloat16") else 4
  return int(store.num_tokens) * int(store.d) * itemsize


def fill_model_d(config) -> None:
  """config.model.d from the data when the config leaves it unset: the store manifest's d (no
  token is read) or the planted hierarchy's d. An explicit d is kept and checked later."""
  if config.model.get("d") is not None:
    return
  if config.data.kind == "store" and config.data.path:
    from csae_jax import store as store_lib
    manifest = os.path.join(config.data.path, store_lib.MANIFEST)
    if not os.path.isfile(manifest):
      raise FileNotFoundError(f"config.model.d is unset and {manifest} does not exist: give an "
                              "activation store in config.data.path (or set config.model.d)")
    with open(manifest) as f:
      d = json.load(f).get("d")
  elif config.data.kind == "planted" and config.data.planted.get("d") is not None:
    d = config.data.planted.get("d")
  else:
    return
  with config.model.ignore_type():
    config.model.d = int(d)


SHUFFLES = ("auto", "global", "window")


def _store_source(store, data_config):
  """Host-memory copy + global shuffle when the store fits `host_cache_bytes`, else (or with
  data.shuffle='window') chunk windows read from disk (csae_jax/trainer/windowed.py)."""
  from csae_jax.trainer import windowed
  desc = f"activation store {data_config.path}"
  shuffle = data_config.get("shuffle", "auto")
  if shuffle not in SHUFFLES:
    raise ValueError(f"config.data.shuffle must be one of {SHUFFLES}, got {shuffle!r}")
  fits = _store_bytes(store) <= data_config.host_cache_bytes
  if shuffle == "window" or (shuffle == "auto" and not fits):
    w = windowed.window_chunks_for(store, int(data_config.get("window_bytes", 1 << 30)))
    return windowed.WindowedStoreSource(
        store, w, desc + f" (chunk windows of {w} chunks, read ahead)")
  if fits:
    tokens = store.read_tokens_native(0, store.num_tokens)   # float16/bfloat16 stay compact
    return ArraySource(tokens, desc + " (read into host memory)")
  return StoreSource(store, desc)


def shuffle_kind(source) -> str:
  """What decides the batch order besides (seed, step); recorded with a run, checked on resume."""
  if hasattr(source, "make_rule"):
    return f"window:{source.window_chunks}x{source.chunk_tokens}"
  return "global"


def make_rule(source, batch_size: int, seed: int, attach: bool = True):
  """The batch rule of a source: chunk windows for a windowed store, else the global rule.

  Both are pure functions of (seed, step). `attach` lets the rule drive the source's read-ahead.
  """
  if hasattr(source, "make_rule"):
    return source.make_rule(batch_size, seed, attach=attach)
  return BatchRule(source.num_tokens, batch_size, seed)


def _sha256_array(a: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(a).view(np.uint8).reshape(-1).data).hexdigest()


def store_fingerprint(store) -> dict:
  """What a run's data is, recorded with every checkpoint and compared on resume (a store
  replaced at the same path must not be resumed silently): the sha256 of the manifest's content
  checksums (one per chunk, so it changes with any token but not with the creation time),
  num_tokens, d and dtype."""
  return {"kind": "store", "num_tokens": store.num_tokens, "d": store.d, "dtype": store.dtype,
          "manifest_checksums_sha256": hashlib.sha256(
              json.dumps(store.manifest["checksums"], sort_keys=True).encode()).hexdigest()}


def check_fingerprint(saved: dict | None, current: dict, workdir) -> None:
  """Raises DataMismatch when a resumed run's data differ from the data it was trained on."""
  if saved is None:      # checkpoints written before fingerprints existed
    return
  diff = [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in sorted(set(saved) | set(current))
          if saved.get(k) != current.get(k)]
  if diff:
    raise DataMismatch(
        f"{workdir} was trained on different data than config.data gives now ("
        + "; ".join(diff) + "). Resuming would mix the two silently; point config.data at the "
        "original data, use another --workdir, or pass --config.overwrite=True to start over.")


class DataMismatch(ValueError):
  """The data of a resumed run are not the data it was trained on."""


def open_source(data_config, d_expected: int):
  """The token source named by config.data; every integrity / shape problem raises here."""
  if data_config.kind == "planted":
    from csae_jax import planted as planted_lib
    fields = dict(data_config.planted.to_dict() if hasattr(data_config.planted, "to_dict")
                  else data_config.planted)
    fields.setdefault("d", d_expected)
    try:
      h = planted_lib.make_planted(planted_lib.PlantedConfig(**fields))
    except TypeError as e:
      raise ValueError(f"config.data.planted: {e}") from None
    src = ArraySource(h.tokens, f"planted hierarchy {fields}")
    fingerprint = {"kind": "planted", "num_tokens": int(h.tokens.shape[0]),
                   "d": int(h.tokens.shape[1]), "tokens_sha256": _sha256_array(h.tokens)}
  else:
    from csae_jax import store as store_lib
    store = store_lib.ActivationStore.open(data_config.path)
    if data_config.verify:
      store.verify(check_finite=True)   # one pass: checksums and NaN/Inf
    if data_config.split and store.manifest.get("split") != data_config.split:
      raise ValueError(f"store {data_config.path} holds split {store.manifest.get('split')!r} "
                       f"but config.data.split={data_config.split!r}")
    fingerprint = store_fingerprint(store)
    src = _store_source(store, data_config)
    if not data_config.verify:   # NaN/Inf scan on its own (verify does it in the same pass)
      store.check_finite(src.tokens if isinstance(src, ArraySource) else None)
  src.fingerprint = fingerprint
  if src.d != d_expected:
    raise ValueError(f"the data ({src.description}) has d={src.d} but config.model.d="
                     f"{d_expected}; set config.model.d={src.d} or use the matching store")
  if src.num_tokens <= 0:
    raise ValueError(f"the data ({src.description}) holds no tokens")
  return src


def estimate_scale(source, rule_seed: int, batch_size: int, batches: int, max_tokens: int) -> float:
  """s with s^2 = E||x||^2 over `batches` batches of a separate stream (SPEC 1, Input scaling).

  Every process computes it from the same rows, so all agree without communication.
  """
  from csae_jax import conventions as cv
  n = min(source.num_tokens, batches * batch_size, max_tokens)
  rule = make_rule(source, n, rule_seed ^ 0x5CA1E, attach=False)
  idx = rule.indices(0)
  chunks = (source.read_rows(idx[i:i + 65536]) for i in range(0, n, 65536))
  return cv.estimate_input_scale(chunks)


# ----------------------------------------------------------------------------- global batches
def device_tokens(source, sharding, max_bytes: int):
  """All tokens as one array replicated on every device (device-resident mode).

  float16/bfloat16 tokens held in host memory stay in their dtype (no float32 copy of the whole
  store); the step converts its gathered batch.
  """
  native = getattr(source, "tokens", None)
  compact = native is not None and str(native.dtype) in ("float16", "bfloat16")
  nbytes = source.num_tokens * source.d * (2 if compact else 4)
  if nbytes > max_bytes:
    raise ValueError(f"config.data.device_resident: the data ({source.description}) needs "
                     f"{nbytes / 2**30:.2f} GiB per device, over "
                     f"config.data.device_max_bytes={max_bytes / 2**30:.2f} GiB; turn the mode off "
                     "or raise the limit")
  tokens = native if compact else source.all_tokens()
  return jax.make_array_from_callback(tokens.shape, sharding, lambda idx: tokens[idx])


def local_row_slices(sharding, global_shape) -> list[tuple[int, int]]:
  """Distinct row ranges of the global batch held by this process's devices."""
  spans = set()
  for index in sharding.addressable_devices_indices_map(global_shape).values():
    rows = index[0]
    start = rows.start or 0
    stop = global_shape[0] if rows.stop is None else rows.stop
    spans.add((start, stop))
  return sorted(spans)


class Batches:
  """Global jax.Arrays for steps start..stop-1, built `prefetch` steps ahead in a thread.

  indices_only=True yields the int32 token indices [B] instead of the rows [B, d] (the
  device-resident mode, where the step gathers from tokens kept on the devices).
  """

  def __init__(self, source, rule: BatchRule, sharding, start: int, stop: int, prefetch: int = 2,
               transform: Callable[[np.ndarray], np.ndarray] | None = None,
               indices_only: bool = False):
    self.source, self.rule, self.sharding = source, rule, sharding
    self.indices_only = indices_only
    self.shape = (rule.batch_size,) if indices_only else (rule.batch_size, source.d)
    self.spans = local_row_slices(sharding, self.shape)
    self.transform = transform
    self._queue: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, args=(start, stop), daemon=True)
    self._thread.start()

  def read_local(self, step: int) -> dict[tuple[int, int], np.ndarray]:
    """This process's rows (or indices) of the global batch of `step`, keyed by row span."""
    idx = self.rule.indices(step)
    parts = {}
    for a, b in self.spans:
      if self.indices_only:
        parts[(a, b)] = idx[a:b].astype(np.int32)
        continue
      rows = self.source.read_rows(idx[a:b])
      parts[(a, b)] = rows if self.transform is None else self.transform(rows)
    if hasattr(self.source, "after_step"):
      self.source.after_step(step)
    return parts

  def make(self, step: int) -> jax.Array:
    parts = self.read_local(step)

    def block(index):
      rows = index[0]
      a = rows.start or 0
      b = self.shape[0] if rows.stop is None else rows.stop
      return parts[(a, b)][index[1:]]

    return jax.make_array_from_callback(self.shape, self.sharding, block)

  def _run(self, start, stop):
    try:
      for step in range(start, stop):
        if self._stop.is_set():
          return
        item = (step, self.make(step))
        while not self._stop.is_set():
          try:
            self._queue.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
    except BaseException as e:  # surfaced in the training thread
      self._queue.put((None, e))

  def get(self, step: int) -> jax.Array:
    got, x = self._queue.get()
    if got is None:
      raise x
    if got != step:
      raise RuntimeError(f"input pipeline out of order: wanted step {step}, got {got}")
    return x

  def close(self):
    self._stop.set()
    try:
      while True:
        self._queue.get_nowait()
    except queue.Empty:
      pass
    self._thread.join(timeout=5)
