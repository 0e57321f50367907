"""Store format: names, dtypes, manifest keys, checksums and tensorstore array helpers.

The layout of a store directory is described in `csae_jax/store/__init__.py`.
"""
from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import socket
from typing import Any, Sequence

import ml_dtypes
import numpy as np
import tensorstore as ts

from csae_jax import fileio

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
IMAGE_IDS = "image_ids.json"
PARTIAL_SUFFIX = ".partial"
PROGRESS = "progress.json"
IMAGES_LOG = "images.jsonl"
SKIPPED_LOG = "skipped.jsonl"
DEFAULT_CHUNK_TOKENS = 8192
EMBEDDING_CHUNK_ROWS = 4096
_GROW_SHAPE = 2 ** 40           # domain while streaming; resized (metadata only) at finalize
_CRC_BYTES = 4                  # the crc32c codec appends 4 bytes to each chunk
EMBEDDING_FLAG = "--embedding_backbone"

DTYPES = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16),
          "bfloat16": np.dtype(ml_dtypes.bfloat16)}
REQUIRED_KEYS = ("format_version", "model", "hooked_module", "d", "dtype", "num_tokens",
                 "num_images", "split", "created", "chunk_tokens", "checksums", "label_names",
                 "embedding")


class StoreError(ValueError):
  """Any integrity problem of an activation store (missing, truncated, corrupt, mismatched)."""


# ----------------------------------------------------------------------------- helpers
def _sha256(a: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(a).view(np.uint8).data).hexdigest()


def _sha256_json(obj) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _check_dtype(dtype) -> str:
  name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
  if name not in DTYPES:
    raise ValueError(f"store dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
  return name


def _array_spec(path: str, *, dtype: str, shape: Sequence[int] | None = None,
                chunks: Sequence[int] | None = None, create: bool = False) -> dict:
  # store_data_equal_to_fill_value: tensorstore otherwise skips chunks equal to the fill value
  # (0), so an all-zero chunk would have no file and the store would look truncated.
  spec: dict[str, Any] = {"driver": "zarr3", "kvstore": {"driver": "file", "path": path},
                          "store_data_equal_to_fill_value": True}
  if create:
    spec["metadata"] = {
        "shape": list(shape), "data_type": dtype,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}]}
    spec["create"] = True
    spec["delete_existing"] = True
  return spec


def _create_array(path, dtype, shape, chunks):
  return ts.open(_array_spec(path, dtype=dtype, shape=shape, chunks=chunks, create=True)).result()


def _open_array(path: str, what: str, context=None):
  if not os.path.isfile(os.path.join(path, "zarr.json")):
    raise StoreError(f"{what}: missing array metadata {os.path.join(path, 'zarr.json')}")
  try:
    kw = {} if context is None else {"context": context}
    return ts.open(_array_spec(path, dtype=""), **kw).result()
  except Exception as e:  # tensorstore raises ValueError with a status text
    raise StoreError(f"{what}: cannot open zarr array at {path}: {e}") from e


def _read(arr, what: str) -> np.ndarray:
  try:
    return np.asarray(arr.read().result())
  except Exception as e:
    raise StoreError(f"{what}: read failed ({e}); the file is corrupt or truncated") from e


def _write_json_atomic(path: str, obj) -> None:
  fileio.write_json_atomic(path, obj, indent=1)


def is_store_dir(path: str) -> bool:
  """A finished store (has a manifest) or an extraction in progress (has progress.json)."""
  return os.path.isfile(os.path.join(path, MANIFEST)) or \
      os.path.isfile(os.path.join(path, PROGRESS))


def zero_chunk_sha256(rows: int, d: int, dtype: str) -> str:
  """sha256 of an all-zero chunk: stores written before `store_data_equal_to_fill_value` have
  no file for such chunks (tensorstore reads them back as the fill value, 0)."""
  return _sha256(np.zeros((rows, d), DTYPES[dtype]))


def _package_version(name: str) -> str | None:
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return None


def _creation_info(extra_versions: dict | None = None) -> dict:
  versions = {"python": platform.python_version(), "numpy": np.__version__,
              "tensorstore": _package_version("tensorstore")}
  versions.update(extra_versions or {})
  return {"timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "host": socket.gethostname(), "versions": versions}


def chunk_file(store_path: str, chunk: int) -> str:
  """Path of activation chunk `chunk` (zarr v3 default key encoding: c/<row chunk>/<col chunk>)."""
  return os.path.join(store_path, "activations", "c", str(chunk), "0")


def _num_chunks(num_tokens: int, chunk_tokens: int) -> int:
  return -(-num_tokens // chunk_tokens)

