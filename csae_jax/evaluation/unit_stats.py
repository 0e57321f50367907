"""Per-unit statistics for the concept dashboard, from one evaluation pass (NumPy, float64 sums).

Everything here is computed from the image-level codes v (n_images, n1) of the pass (SPEC 4: the
mean code over an image's tokens), the images' labels and the atoms:
  density        fraction of evaluation images on which the unit fires (v > 0)
  hist_counts    histogram of the unit's positive image-level codes, `bins` equal bins on
                 [0, max_u] (numpy.histogram's convention: the last bin includes max_u)
  quantile bands the firing images ranked by code, cut into `bands` equal-count bands (band 0 =
                 the top); `per_band` examples evenly spaced by rank inside each band
  labels         the `top_labels` labels with the largest activation mass among firing images,
                 with their firing-image counts and their share of the unit's activation mass
  parent cosine  cos(child atom, parent atom) for each Level-1 unit with a Level-2 parent
and, from a second pass over only the chunks holding each unit's top images, token heatmaps: the
codes of each of those tokens, re-computed on exactly the chunk (and padding) of the evaluation
pass, so a heatmap's mean is the image-level code. Columns are processed in blocks of units.
"""
from __future__ import annotations

import math

import numpy as np

HEAT_CELLS = 64          # heatmaps are pooled to at most 8 x 8 cells (or 64 cells in a strip)


BLOCK_ELEMENTS = 1 << 23   # temporaries per block of units: ~64 MB of float64


def _blocks(n, block):
  return range(0, n, block)


def _block(n_img, cap):
  """Units per block so that an (n_images, block) temporary stays near BLOCK_ELEMENTS."""
  return int(max(1, min(cap, BLOCK_ELEMENTS // max(n_img, 1))))


def histograms(v: np.ndarray, bins: int, block: int = 2048):
  """(counts (n, bins) int64, upper edge (n,) float64 = max code; 0 when it never fires)."""
  v = np.asarray(v)
  n_img, n = v.shape
  counts = np.zeros((n, bins), np.int64)
  hi = np.zeros(n, np.float64)
  block = _block(n_img, block)
  for s in _blocks(n, block):   # a loop over unit blocks; each block is vectorised
    x = v[:, s:s + block].astype(np.float64)
    top = x.max(0)
    pos = x > 0
    b = np.floor(x * (bins / np.where(top > 0, top, 1.0))).astype(np.int64)
    b = np.clip(b, 0, bins - 1)
    cols = np.broadcast_to(np.arange(x.shape[1]), x.shape)
    flat = (cols[pos] * bins + b[pos])
    counts[s:s + x.shape[1]] = np.bincount(flat, minlength=x.shape[1] * bins).reshape(-1, bins)
    hi[s:s + x.shape[1]] = np.where(top > 0, top, 0.0)
  return counts, hi


def quantile_examples(v: np.ndarray, bands: int, per_band: int, block: int = 512):
  """(images (n, bands, per_band) int64 with -1 padding, values float32) of each unit.

  Firing images (v > 0) ranked by code, best first, ties by image index; band q holds ranks
  [floor(q f / bands), floor((q + 1) f / bands)) of the f firing images; example j of a band of
  length L is its rank floor((j + 0.5) L / per_band) (j < L).
  """
  v = np.asarray(v)
  n_img, n = v.shape
  imgs = np.full((n, bands, per_band), -1, np.int64)
  vals = np.zeros((n, bands, per_band), np.float32)
  q = np.arange(bands)
  j = np.arange(per_band)
  block = _block(n_img, block)
  for s in _blocks(n, block):
    x = v[:, s:s + block]
    order = np.argsort(-x, axis=0, kind="stable")           # (n_img, b)
    f = (x > 0).sum(0)                                       # (b,)
    lo = (q[None, :] * f[:, None]) // bands                  # (b, bands)
    hi = ((q[None, :] + 1) * f[:, None]) // bands
    length = hi - lo
    rank = lo[..., None] + np.floor((j + 0.5)[None, None, :] * length[..., None]
                                    / per_band).astype(np.int64)
    ok = j[None, None, :] < length[..., None]
    rank = np.where(ok, rank, 0)
    cols = np.arange(x.shape[1])[:, None, None]
    im = order[rank, cols]
    imgs[s:s + x.shape[1]] = np.where(ok, im, -1)
    vals[s:s + x.shape[1]] = np.where(ok, x[im, cols], 0.0)
  return imgs, vals


def label_breakdown(v: np.ndarray, labels, top: int, block: int = 2048):
  """(label ids (n, top) -1 padded, firing-image counts (n, top), mass share (n, top)).

  Labels ranked by the sum of the unit's positive codes over images of that label (ties: the
  smaller label id); share = that sum / the unit's total positive mass.
  """
  v = np.asarray(v)
  n_img, n = v.shape
  ids = np.full((n, top), -1, np.int64)
  cnt = np.zeros((n, top), np.int64)
  share = np.zeros((n, top), np.float32)
  if labels is None:
    return ids, cnt, share
  lab = np.asarray(labels, np.int64)
  rows = np.flatnonzero(lab >= 0)
  if rows.size == 0:
    return ids, cnt, share
  rows = rows[np.argsort(lab[rows], kind="stable")]     # images grouped by label
  present, starts = np.unique(lab[rows], return_index=True)
  n_lab = int(present[-1]) + 1
  t = min(top, n_lab)
  block = _block(len(rows), block)
  for s in _blocks(n, block):
    x = np.maximum(v[rows, s:s + block].astype(np.float64), 0.0)    # (labelled images, b)
    mass = np.zeros((x.shape[1], n_lab))
    count = np.zeros((x.shape[1], n_lab))
    mass[:, present] = np.add.reduceat(x, starts, axis=0).T         # per label, no one-hot
    count[:, present] = np.add.reduceat((x > 0).astype(np.float64), starts, axis=0).T
    order = np.lexsort((np.broadcast_to(np.arange(n_lab), mass.shape), -mass), axis=1)[:, :t]
    m = np.take_along_axis(mass, order, 1)
    total = np.maximum(v[:, s:s + block].astype(np.float64), 0.0).sum(0)[:, None]
    keep = m > 0
    ids[s:s + x.shape[1], :t] = np.where(keep, order, -1)
    cnt[s:s + x.shape[1], :t] = np.where(keep, np.take_along_axis(count, order, 1), 0)
    share[s:s + x.shape[1], :t] = np.where(keep, m / np.where(total > 0, total, 1.0), 0.0)
  return ids, cnt, share


def parent_cosines(atoms1, parent, atoms2=None) -> np.ndarray:
  """cos(atom of each Level-1 unit, its parent's direction); NaN without a parent.

  The parent's direction is its Level-2 atom when given, otherwise (post-hoc clusters) the mean of
  its children's unit-normalised atoms.
  """
  a1 = np.asarray(atoms1, np.float64)
  a1 = a1 / np.maximum(np.linalg.norm(a1, axis=1, keepdims=True), 1e-12)
  parent = np.asarray(parent, np.int64)
  out = np.full(a1.shape[0], np.nan)
  has = parent >= 0
  if not has.any():
    return out
  if atoms2 is None:
    n_par = int(parent.max()) + 1
    dirs = np.zeros((n_par, a1.shape[1]))
    np.add.at(dirs, parent[has], a1[has])
  else:
    dirs = np.asarray(atoms2, np.float64)
  dirs = dirs / np.maximum(np.linalg.norm(dirs, axis=1, keepdims=True), 1e-12)
  out[has] = np.sum(a1[has] * dirs[parent[has]], axis=1)
  return out


def compute(image_codes, labels, *, atoms1=None, parent=None, atoms2=None, bins: int = 24,
            bands: int = 4, per_band: int = 3, top_labels: int = 5) -> dict:
  """All per-unit statistics as a dict of arrays (saved with the Evaluation)."""
  v = np.asarray(image_codes)
  counts, hi = histograms(v, bins)
  q_img, q_val = quantile_examples(v, bands, per_band)
  l_ids, l_cnt, l_share = label_breakdown(v, labels, top_labels)
  out = {"density": ((v > 0).sum(0) / max(v.shape[0], 1)).astype(np.float64),
         "hist_counts": counts, "hist_max": hi, "quantile_images": q_img,
         "quantile_values": q_val, "label_ids": l_ids, "label_counts": l_cnt,
         "label_share": l_share, "mean_code": v.mean(0).astype(np.float64)}
  if atoms1 is not None and parent is not None:
    out["parent_cos"] = parent_cosines(atoms1, parent, atoms2)
  return out


# ----------------------------------------------------------------------------- heatmaps
def heat_grid(n_tokens: int) -> tuple[int, int, int]:
  """(skip, rows, cols): a square patch grid, a square grid after one leading token (a CLS-like
  token), or else one strip of all tokens."""
  s = math.isqrt(n_tokens)
  if s * s == n_tokens and s > 1:
    return 0, s, s
  s = math.isqrt(max(n_tokens - 1, 0))
  if n_tokens > 2 and s * s == n_tokens - 1 and s > 1:
    return 1, s, s
  return 0, 1, n_tokens


def pool_heat(tokens: np.ndarray, max_cells: int = HEAT_CELLS):
  """Token codes of one image -> (cells (rows*cols,) float32 block means, rows, cols)."""
  t = np.asarray(tokens, np.float64)
  skip, rows, cols = heat_grid(t.size)
  g = t[skip:].reshape(rows, cols)
  side = int(math.isqrt(max_cells))
  if rows > 1:
    r_out, c_out = min(rows, side), min(cols, side)
  else:
    r_out, c_out = 1, min(cols, max_cells)
  r0 = _split_starts(rows, r_out)
  c0 = _split_starts(cols, c_out)
  sums = np.add.reduceat(np.add.reduceat(g, r0, axis=0), c0, axis=1)
  sizes = np.outer(np.diff(np.r_[r0, rows]), np.diff(np.r_[c0, cols]))
  return (sums / sizes).astype(np.float32).reshape(-1), r_out, c_out


def _split_starts(n, parts):
  """Start indices of numpy.array_split(range(n), parts): the first n % parts blocks are longer."""
  size, extra = divmod(n, parts)
  return np.cumsum([0] + [size + (1 if i < extra else 0) for i in range(parts - 1)]).astype(np.int64)


def token_codes(subject, source, pairs, chunk_tokens: int,
                images_per_batch: int | None = None) -> dict:
  """{(image, unit): per-token codes} recomputed on the evaluation pass's own chunks (global
  windows, or the release's chunks inside image batches: evaluation/release.py).

  pairs: iterable of (image, unit). Only chunks holding a requested image's tokens are encoded.
  """
  import jax
  from csae_jax.evaluation import release as release_lib
  offsets = np.asarray(source.token_offsets, np.int64)
  want = {}
  for i, u in pairs:
    want.setdefault(int(i), set()).add(int(u))
  if not want:
    return {}
  c = int(chunk_tokens)
  bounds = release_lib.chunk_bounds(offsets, c, images_per_batch)
  starts = np.asarray([a for a, _ in bounds], np.int64)
  chunks = sorted({k for i in want if offsets[i + 1] > offsets[i]
                   for k in range(int(np.searchsorted(starts, offsets[i], "right")) - 1,
                                  int(np.searchsorted(starts, offsets[i + 1] - 1, "right")))})
  step = jax.jit(lambda x, valid: subject.level1(x, valid)[0])
  got = {}
  for k in chunks:   # a loop over the needed chunks of the evaluation pass
    start, stop = bounds[k]
    x = np.zeros((c, subject.d), np.float32)
    x[:stop - start] = np.asarray(source.read_tokens(start, stop), np.float32)
    valid = np.zeros(c, bool)
    valid[:stop - start] = True
    codes = np.asarray(step(x, valid))
    for i, units in want.items():
      lo, hi = max(offsets[i], start), min(offsets[i + 1], stop)
      if lo >= hi:
        continue
      u = np.fromiter(sorted(units), np.int64)
      part = codes[lo - start:hi - start][:, u]
      for j, uu in enumerate(u):
        got.setdefault((i, int(uu)), []).append(part[:, j])
  return {key: np.concatenate(v) for key, v in got.items()}


def heatmaps(subject, source, top_images, top_values, per_unit: int, chunk_tokens: int,
             images_per_batch: int | None = None) -> dict:
  """Pooled token heatmaps of each unit's first `per_unit` top images (value > 0).

  Returns heat (n1, per_unit, HEAT_CELLS) uint8 (cell / the map's max * 255), heat_shape
  (n1, per_unit, 2) rows, cols (0 = no map), heat_max (n1, per_unit) float32.
  """
  n1 = top_images.shape[0]
  m = min(per_unit, top_images.shape[1])
  pairs = [(int(top_images[u, j]), u) for u in range(n1) for j in range(m) if top_values[u, j] > 0]
  codes = token_codes(subject, source, pairs, chunk_tokens, images_per_batch)
  heat = np.zeros((n1, per_unit, HEAT_CELLS), np.uint8)
  shape = np.zeros((n1, per_unit, 2), np.int64)
  hmax = np.zeros((n1, per_unit), np.float32)
  for u in range(n1):
    for j in range(m):
      key = (int(top_images[u, j]), u)
      if key not in codes:
        continue
      cells, r, c = pool_heat(codes[key])
      top = float(cells.max())
      hmax[u, j] = top
      shape[u, j] = (r, c)
      if top > 0:
        heat[u, j, :cells.size] = np.round(np.clip(cells / top, 0, 1) * 255).astype(np.uint8)
  return {"heat": heat, "heat_shape": shape, "heat_max": hmax}
