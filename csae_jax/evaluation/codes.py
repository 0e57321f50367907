"""One chunked pass over evaluation tokens (SPEC section 4): everything token-level at once.

Per chunk of `chunk_tokens` (default 4096) tokens, one jitted step computes the Level-1 codes
(BatchTopK over the chunk by default), the dense activation and the reconstruction, and folds them
into accumulators that live on the device and are donated between steps:
  image_sums (n_images, n1)  sum of codes per image (image-level codes v = sums / tokens per image)
  alive (n1,)                unit in some token's dense top-12 with value > 1e-3
  fired (n1,)                unit active (code > 0) on some token (dead fraction on held-out tokens)
  coact (n1, n2) int32       for each token: Level-1 units in its dense top-12 (> 1e-3) x its
                             Level-2 top-1 unit (> 1e-3), only when the Subject has a Level 2
Reconstruction sums (squared error, sum x, sum ||x||^2, L0) come back per chunk as scalars and are
accumulated in float64 on the host. The last chunk is padded to the chunk size with a row mask, so
there is one compilation.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from csae_jax.evaluation import release as release_lib
from csae_jax.evaluation.subjects import Subject


@dataclasses.dataclass(frozen=True)
class PassOptions:
  chunk_tokens: int = 4096
  top_alive: int = 12       # SPEC 4: dense top-12
  act_min: float = 1e-3     # SPEC 4: value > 1e-3
  coactivation: bool = True
  # None: global windows of chunk_tokens (SPEC 4); an int: the release's batches of that many
  # whole images, each cut into chunk_tokens windows (csae_jax.evaluation.release)
  images_per_batch: int | None = None


@dataclasses.dataclass
class PassResult:
  image_codes: np.ndarray   # (n_images, n1) float32, mean code per token of each image
  alive: np.ndarray         # (n1,) bool
  fired: np.ndarray         # (n1,) bool
  coact: np.ndarray | None  # (n1, n2) int32 or None
  recon: dict               # fvu, explained_variance, l0, dead_fraction, tokens


def _step(subject: Subject, opts: PassOptions, acc, x, img, valid):
  codes, dense, xhat = subject.level1(x, valid)
  n_img = acc["image_sums"].shape[0]
  img = jnp.where(valid, img, n_img)
  image_sums = acc["image_sums"].at[img].add(codes, mode="drop")
  k = min(opts.top_alive, dense.shape[1])
  vals, idx = lax.top_k(dense, k)
  ok = (vals > opts.act_min) & valid[:, None]
  alive = acc["alive"].at[idx.reshape(-1)].max(ok.reshape(-1))
  fired = acc["fired"] | jnp.any((codes > 0) & valid[:, None], axis=0)
  new = {"image_sums": image_sums, "alive": alive, "fired": fired}
  if "coact" in acc:
    s2 = subject.level2(x, codes)
    top2 = jnp.argmax(s2, axis=-1)
    ok2 = ok & (jnp.max(s2, axis=-1) > opts.act_min)[:, None]
    r = jnp.broadcast_to(top2[:, None], idx.shape)
    new["coact"] = acc["coact"].at[idx.reshape(-1), r.reshape(-1)].add(
        ok2.reshape(-1).astype(jnp.int32))
  m = valid.astype(jnp.float32)
  sums = {
      "sse": jnp.sum(m * jnp.sum(jnp.square(x - xhat), -1)),
      "sum_x": jnp.sum(m[:, None] * x, 0),
      "sum_xx": jnp.sum(m * jnp.sum(jnp.square(x), -1)),
      "l0": jnp.sum(m * jnp.sum(codes > 0, -1)),
  }
  return new, sums


def token_images(offsets: np.ndarray, start: int, stop: int) -> np.ndarray:
  """Image index of each token in [start, stop) from per-image token offsets."""
  return (np.searchsorted(offsets, np.arange(start, stop), side="right") - 1).astype(np.int32)


def run_pass(subject: Subject, source, opts: PassOptions = PassOptions(),
             progress=None) -> PassResult:
  """Stream `source` once in chunks and return image-level codes and token-level statistics."""
  if source.d != subject.d:
    raise ValueError(f"source has d={source.d} but the evaluated model has d={subject.d}")
  n_img, n1 = int(source.num_images), subject.n1
  acc = {"image_sums": jnp.zeros((n_img, n1), jnp.float32),
         "alive": jnp.zeros((n1,), bool), "fired": jnp.zeros((n1,), bool)}
  if opts.coactivation and subject.level2 is not None:
    acc["coact"] = jnp.zeros((n1, subject.n2), jnp.int32)
  step = jax.jit(functools.partial(_step, subject, opts), donate_argnums=(0,))
  offsets = np.asarray(source.token_offsets, np.int64)
  total = int(source.num_tokens)
  c = int(opts.chunk_tokens)
  sse = sum_xx = l0 = 0.0
  sum_x = np.zeros(subject.d, np.float64)
  # a loop over token chunks; each chunk is one vectorised step
  for start, stop in release_lib.chunk_bounds(offsets, c, opts.images_per_batch):
    x = np.asarray(source.read_tokens(start, stop), np.float32)
    if x.shape != (stop - start, subject.d):
      raise ValueError(f"read_tokens({start}, {stop}) returned shape {x.shape}")
    if not np.all(np.isfinite(x)):
      bad = np.argwhere(~np.isfinite(x))[0]
      raise ValueError(f"activations contain NaN/Inf (token {start + bad[0]}, column {bad[1]})")
    img = token_images(offsets, start, stop)
    valid = np.ones(c, bool)
    if stop - start < c:
      pad = c - (stop - start)
      x = np.concatenate([x, np.zeros((pad, subject.d), np.float32)])
      img = np.concatenate([img, np.zeros(pad, np.int32)])
      valid[stop - start:] = False
    acc, sums = step(acc, x, img, valid)
    sums = jax.device_get(sums)
    sse += float(sums["sse"])
    sum_xx += float(sums["sum_xx"])
    l0 += float(sums["l0"])
    sum_x += np.asarray(sums["sum_x"], np.float64)
    if progress is not None:
      progress(stop, total)
  counts = np.diff(offsets).astype(np.float32)
  image_codes = np.array(acc["image_sums"])   # a writable host copy
  del acc["image_sums"]
  image_codes /= np.maximum(counts, 1.0)[:, None]
  var = sum_xx - float(sum_x @ sum_x) / total
  fvu = sse / var if var > 0 else float("nan")
  fired = np.asarray(acc["fired"])
  recon = {"fvu": fvu, "explained_variance": 1.0 - fvu, "l0": l0 / total,
           "dead_fraction": float(1.0 - fired.mean()), "tokens": total}
  coact = np.asarray(acc["coact"]) if "coact" in acc else None   # int32, no host copy
  return PassResult(image_codes, np.asarray(acc["alive"]), fired, coact, recon)


def top_images(image_codes: np.ndarray, top: int = 16) -> tuple[np.ndarray, np.ndarray]:
  """(indices (n_units, top), values) of each unit's highest image-level codes, best first."""
  v = np.asarray(image_codes)
  t = int(min(top, v.shape[0]))
  part = np.argpartition(-v, t - 1, axis=0)[:t]            # (t, n_units), unordered
  vals = np.take_along_axis(v, part, axis=0)
  order = np.argsort(-vals, axis=0, kind="stable")
  idx = np.take_along_axis(part, order, axis=0).T
  return idx.astype(np.int64), np.take_along_axis(vals, order, axis=0).T
