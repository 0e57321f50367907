"""The activation store: the contract between extraction (torch) and training (JAX).

A store is a directory:
  manifest.json          what the data is (model, hooked module, d, dtype, counts, split,
                         creation info, per-chunk checksums, label names, embedding backbone)
  activations/           zarr v3 array [num_tokens, d] (float32 | float16 | bfloat16), chunked
                         along tokens (chunk_tokens rows per chunk), each chunk crc32c-sealed
  token_offsets/         zarr v3 int64 [num_images + 1]: tokens of image i are [o[i], o[i+1])
  labels/                zarr v3 int64 [num_images]
  embeddings/            optional zarr v3 float32 [num_images, e] reference embeddings (HMS)
  image_ids.json         {"image_ids": [...]} (strings)

Written and read with tensorstore (SPEC section 6: tokens of all images concatenated, per-image
offsets kept). Integrity is checked at two levels: every chunk carries a crc32c (any read of a
corrupt chunk fails), the manifest holds a sha256 per chunk (`verify()` rereads everything), and
`open()` cheaply checks that every chunk file is present with the right size (tensorstore would
otherwise read a missing chunk as zeros). Every problem raises `StoreError`.

Writing is streaming (`StoreWriter`): bounded memory, chunks written by a background thread,
committed progress after every chunk so an interrupted run resumes at the first unfinished chunk,
and an atomic finalize (everything is written into `<path>.partial`, then renamed).

The package is split by role: `format` (names, dtypes, manifest keys, checksums, array helpers),
`reader` (`ActivationStore`), `writer` (`StoreWriter`, `write_store`) and `combine`
(`combine_stores`). Everything public is re-exported here, so `from csae_jax import store;
store.ActivationStore` keeps working.
"""
from csae_jax.store.combine import combine_stores
from csae_jax.store.format import (
    DEFAULT_CHUNK_TOKENS, DTYPES, EMBEDDING_CHUNK_ROWS, EMBEDDING_FLAG, FORMAT_VERSION, IMAGE_IDS,
    IMAGES_LOG, MANIFEST, PARTIAL_SUFFIX, PROGRESS, REQUIRED_KEYS, SKIPPED_LOG, StoreError,
    chunk_file)
from csae_jax.store.reader import ActivationStore
from csae_jax.store.writer import StoreWriter, check_overwrite, write_store

__all__ = [
    "ActivationStore", "DEFAULT_CHUNK_TOKENS", "DTYPES", "EMBEDDING_CHUNK_ROWS", "EMBEDDING_FLAG",
    "FORMAT_VERSION", "IMAGE_IDS", "IMAGES_LOG", "MANIFEST", "PARTIAL_SUFFIX", "PROGRESS",
    "REQUIRED_KEYS", "SKIPPED_LOG", "StoreError", "StoreWriter", "check_overwrite", "chunk_file", "combine_stores",
    "write_store",
]
