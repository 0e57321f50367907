"""Release-faithful evaluation: the authors' public evaluation, where it differs from SPEC 4.

The switch `eval.release_faithful=True` (configs/csae_release.py, configs/experiments_store.py)
reproduces the numbers of the authors' released evaluation from their checkpoints; the project's
default stays the SPEC reading. Each difference is one option (docs/release_faithful.md):

  chunks   BatchTopK codes over 4096-token chunks cut INSIDE batches of 16 whole images (the
           release's data loader), not over global 4096-token windows of the concatenated store.
           With BatchTopK the kept set depends on which tokens share a chunk, so image codes (and
           HMS) differ by ~1e-2 per parent when images have 576 tokens or variable counts.
  alive    a unit is alive when it is in some token's dense top-20 (value > 0), not top-12 > 1e-3.
  ae.pt    Level-2 biases and threshold are used as saved (bridge_torch.ae_import
           level2_biases="as_saved"), i.e. multiplied by the run's input scale.
  steering sigma_A and top images from per-token DENSE activations (bridge_torch.release_steering).
"""
from __future__ import annotations

import numpy as np

RELEASE_IMAGES_PER_BATCH = 16
RELEASE_CHUNK_TOKENS = 4096
RELEASE_TOP_ALIVE = 20
RELEASE_ACT_MIN = 0.0


def global_chunk_bounds(total_tokens: int, chunk_tokens: int) -> list[tuple[int, int]]:
  """SPEC 4 default: consecutive windows of `chunk_tokens` over the concatenated tokens."""
  if chunk_tokens <= 0:
    raise ValueError(f"chunk_tokens must be positive, got {chunk_tokens}")
  return [(s, min(s + chunk_tokens, total_tokens)) for s in range(0, int(total_tokens),
                                                                  int(chunk_tokens))]


def image_batch_chunk_bounds(token_offsets, chunk_tokens: int = RELEASE_CHUNK_TOKENS,
                             images_per_batch: int = RELEASE_IMAGES_PER_BATCH
                             ) -> list[tuple[int, int]]:
  """The release: batches of `images_per_batch` whole images, each cut into chunks of at most
  `chunk_tokens` tokens from the batch's first token; a chunk never spans two image batches."""
  if chunk_tokens <= 0 or images_per_batch <= 0:
    raise ValueError(f"chunk_tokens and images_per_batch must be positive, got {chunk_tokens}, "
                     f"{images_per_batch}")
  offsets = np.asarray(token_offsets, np.int64)
  if offsets.ndim != 1 or offsets.size < 1 or np.any(np.diff(offsets) < 0):
    raise ValueError("token_offsets must be a non-decreasing 1-D array")
  bounds = []
  n_img = len(offsets) - 1
  for i in range(0, n_img, images_per_batch):
    lo, hi = int(offsets[i]), int(offsets[min(i + images_per_batch, n_img)])
    bounds.extend((s, min(s + chunk_tokens, hi)) for s in range(lo, hi, chunk_tokens))
  return bounds


def chunk_bounds(token_offsets, chunk_tokens: int, images_per_batch: int | None):
  """Chunk boundaries for one evaluation pass: global windows, or the release's image batches."""
  if images_per_batch is None:
    return global_chunk_bounds(int(np.asarray(token_offsets)[-1]), chunk_tokens)
  return image_batch_chunk_bounds(token_offsets, chunk_tokens, images_per_batch)


def apply_to_eval_config(e) -> None:
  """Set the release's evaluation options on an `eval` ConfigDict (chunks, alive rule)."""
  e.release_faithful = True
  e.chunk_tokens = RELEASE_CHUNK_TOKENS
  e.images_per_batch = RELEASE_IMAGES_PER_BATCH
  e.top_alive = RELEASE_TOP_ALIVE
  e.act_min = RELEASE_ACT_MIN
