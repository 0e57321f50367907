"""Import the authors' HDF5 activation files into our store (streaming, bounded memory).

Their layout: a group `X` with one dataset per layer ([tokens, d]) and a `token_offsets`
dataset. Offsets are accepted as [n_images + 1] (0 .. N), as [n_images] image start rows, or as
[n_images, 2] (start, end) pairs of contiguous images. Optional root datasets `labels` (or `y`)
and `image_ids` (or `paths`, `filenames`) are carried over when present.
"""
from __future__ import annotations

import os

import numpy as np

from csae_jax import store as store_lib


def _offsets(raw: np.ndarray, num_tokens: int) -> np.ndarray:
  raw = np.asarray(raw, np.int64)
  if raw.ndim == 2 and raw.shape[1] == 2:
    if raw.size and (raw[0, 0] != 0 or np.any(raw[1:, 0] != raw[:-1, 1])
                     or raw[-1, 1] != num_tokens):
      raise store_lib.StoreError("token_offsets (start, end) pairs must tile [0, num_tokens) "
                                 "contiguously")
    return np.concatenate([[0], raw[:, 1]]) if raw.size else np.zeros(1, np.int64)
  if raw.ndim != 1 or raw.size == 0:
    raise store_lib.StoreError(f"token_offsets has shape {raw.shape}; expected [n+1], [n] or [n, 2]")
  if raw[0] != 0:
    raise store_lib.StoreError(f"token_offsets must start at 0, got {raw[0]}")
  offs = raw if raw[-1] == num_tokens else np.concatenate([raw, [num_tokens]])
  if np.any(np.diff(offs) < 0) or offs[-1] != num_tokens:
    raise store_lib.StoreError(f"token_offsets are not non-decreasing up to num_tokens={num_tokens}")
  return offs


def import_hdf5(h5_path: str, out: str, layer: str | None = None, dtype: str | None = None,
                chunk_tokens: int = store_lib.DEFAULT_CHUNK_TOKENS, model: str | None = None,
                hooked_module: str | None = None, split: str | None = None,
                label_names=None, overwrite: bool = False) -> str:
  """Write dataset X/<layer> of `h5_path` with its token offsets as a store at `out`."""
  try:
    import h5py
  except ImportError as e:
    raise ImportError("importing HDF5 files needs h5py (pip install h5py)") from e
  if not os.path.isfile(h5_path):
    raise FileNotFoundError(f"no HDF5 file at {h5_path}")
  try:
    f = h5py.File(h5_path, "r")
  except OSError as e:
    raise store_lib.StoreError(f"{h5_path} is not a readable HDF5 file ({e})") from None
  with f:
    if "X" not in f or not isinstance(f["X"], h5py.Group):
      raise store_lib.StoreError(f"{h5_path} has no group 'X' (found {sorted(f.keys())})")
    layers = sorted(f["X"].keys())
    if layer is None:
      if len(layers) != 1:
        raise store_lib.StoreError(f"{h5_path}: X holds layers {layers}; choose one (--hdf5_layer)")
      layer = layers[0]
    if str(layer) not in f["X"]:
      raise store_lib.StoreError(f"{h5_path}: no layer {layer!r} in X; available: {layers}")
    x = f["X"][str(layer)]
    if x.ndim != 2:
      raise store_lib.StoreError(f"X/{layer} has shape {x.shape}; expected [tokens, d]")
    if "token_offsets" not in f:
      raise store_lib.StoreError(f"{h5_path} has no 'token_offsets' dataset")
    n_tok, d = x.shape
    offs = _offsets(f["token_offsets"][()], n_tok)
    n_img = len(offs) - 1
    labels = next((f[k][()] for k in ("labels", "y") if k in f), np.zeros(n_img, np.int64))
    ids = next((f[k][()] for k in ("image_ids", "paths", "filenames") if k in f), None)
    ids = [f"h5:{i}" for i in range(n_img)] if ids is None else \
        [v.decode() if isinstance(v, bytes) else str(v) for v in ids]
    labels = np.asarray(labels, np.int64).reshape(-1)
    if len(labels) != n_img or len(ids) != n_img:
      raise store_lib.StoreError(f"{h5_path}: {n_img} images in token_offsets but {len(labels)} "
                                 f"labels and {len(ids)} ids")
    src_dtype = x.dtype.name
    dtype = dtype or (src_dtype if src_dtype in store_lib.DTYPES else "float32")
    w = store_lib.StoreWriter(out, d=d, dtype=dtype, chunk_tokens=chunk_tokens, model=model,
                              hooked_module=hooked_module or f"X/{layer}", split=split,
                              label_names=label_names, overwrite=overwrite,
                              manifest_extra={"imported_from": os.path.abspath(h5_path),
                                              "hdf5_layer": str(layer)})
    try:
      i = 0
      while i < n_img:       # groups of whole images of about one chunk
        j = int(np.searchsorted(offs, offs[i] + chunk_tokens, side="right")) - 1
        j = min(max(j, i + 1), n_img)
        block = x[offs[i]:offs[j]]
        w.add_batch(block, np.diff(offs[i:j + 1]), labels[i:j], ids[i:j], cursor=j)
        i = j
      return w.finalize()
    except BaseException:
      w.close()
      import shutil
      shutil.rmtree(w.partial, ignore_errors=True)
      raise
