"""Concatenate stores (e.g. the shards of a SLURM array) into one store."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from csae_jax.store.format import REQUIRED_KEYS, StoreError
from csae_jax.store.reader import ActivationStore
from csae_jax.store.writer import StoreWriter


def combine_stores(paths: Sequence[str], out: str, overwrite: bool = False,
                   chunk_tokens: int | None = None) -> str:
  """Concatenate stores (e.g. the shards of a SLURM array, in shard order) into one store.

  The result equals one run over the same images: same arrays, chunking and checksums.
  """
  if not paths:
    raise ValueError("combine_stores needs at least one input store")
  stores = [ActivationStore.open(p) for p in paths]
  first = stores[0].manifest
  for s in stores[1:]:
    for key in ("d", "dtype", "model", "hooked_module", "label_names", "split"):
      if s.manifest[key] != first[key]:
        raise StoreError(f"cannot combine: {key} differs ({first[key]!r} in {stores[0].path}, "
                         f"{s.manifest[key]!r} in {s.path})")
    if (s.manifest["embedding"] is None) != (first["embedding"] is None) or \
        (first["embedding"] and s.manifest["embedding"] != first["embedding"]):
      raise StoreError(f"cannot combine: embeddings differ between {stores[0].path} and {s.path}")
  extra = {k: v for k, v in first.items() if k not in REQUIRED_KEYS and k not in
           ("skipped_images", "shard", "combined_from")}
  extra["combined_from"] = [os.path.abspath(s.path) for s in stores]
  emb = first["embedding"]
  w = StoreWriter(out, d=first["d"], dtype=first["dtype"],
                  chunk_tokens=chunk_tokens or first["chunk_tokens"], model=first["model"],
                  hooked_module=first["hooked_module"], split=first["split"],
                  label_names=first["label_names"], embedding_dim=emb and emb["dim"],
                  embedding_backbone=emb and emb["backbone"], manifest_extra=extra,
                  overwrite=overwrite, versions=first["created"].get("versions"))
  try:
    for s in stores:
      e_all = s.embeddings() if s.has_embeddings else None
      offs = s.token_offsets
      i = 0
      while i < s.num_images:    # groups of images of about one chunk of tokens
        j = int(np.searchsorted(offs, offs[i] + w.T, side="right")) - 1
        j = min(max(j, i + 1), s.num_images)
        w.add_batch(s.read_tokens_native(offs[i], offs[j]), np.diff(offs[i:j + 1]),
                    s.labels[i:j], s.image_ids[i:j], None if e_all is None else e_all[i:j])
        i = j
      w.skipped += s.manifest.get("skipped_images", [])
    return w.finalize()
  finally:
    w.close()
