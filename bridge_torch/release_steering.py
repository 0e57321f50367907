"""Release-faithful steering statistics (issue 12, item 4; docs/release_faithful.md).

The authors' released steering code differs from SPEC 5's reading in three places; with
`SteerConfig.release_faithful=True` (configs/steer_*.py: steer.release_faithful) plan_clusters uses:
  top images  ranked by the sum over A of image-mean DENSE activations (SPEC 5: inference codes);
  sigma_A     per top image, the mean of the per-token dense activations of A's atoms that exceed
              0.5 theta'; then the mean over the images that have any (fallback theta');
              SPEC 5 thresholds per-image means instead;
  alive       in some token's dense top-20 with a positive value (SPEC 4: top-12 > 1e-3).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from bridge_torch.sae import TorchSAE

RELEASE_ALIVE_TOP = 20


def _image_chunks(offsets: np.ndarray, chunk_tokens: int):
  """(first image, stop image) spans of whole images of about chunk_tokens tokens."""
  img, n_img = 0, len(offsets) - 1
  while img < n_img:
    stop = int(np.searchsorted(offsets, offsets[img] + chunk_tokens, side="right") - 1)
    stop = min(max(stop, img + 1), n_img)
    yield img, stop
    img = stop


@torch.no_grad()
def dense_image_means(sae: TorchSAE, read_tokens: Callable[[int, int], np.ndarray],
                      token_offsets, chunk_tokens: int = 4096, alive_top: int = RELEASE_ALIVE_TOP
                      ) -> tuple[np.ndarray, np.ndarray]:
  """(v_dense, alive): v_dense[i, j] = mean over image i's tokens of unit j's dense activation;
  alive[j] = unit j is in some token's dense top-`alive_top` with a positive value."""
  offsets = np.asarray(token_offsets, np.int64)
  v = np.zeros((len(offsets) - 1, sae.n), np.float32)
  alive = np.zeros(sae.n, bool)
  for a, b in _image_chunks(offsets, chunk_tokens):
    x = torch.as_tensor(np.asarray(read_tokens(int(offsets[a]), int(offsets[b])), np.float32))
    dense = sae.dense_activation(x)
    top = torch.topk(dense, min(alive_top, sae.n), dim=-1)
    alive[top.indices[top.values > 0].unique().numpy()] = True
    lens = np.diff(offsets[a:b + 1])
    seg = torch.as_tensor(np.repeat(np.arange(b - a), lens))
    sums = torch.zeros(b - a, sae.n).index_add_(0, seg, dense)
    v[a:b] = (sums / torch.as_tensor(np.maximum(lens, 1), dtype=torch.float32)[:, None]).numpy()
  return v, alive


@torch.no_grad()
def token_concept_scale(sae: TorchSAE, read_tokens: Callable[[int, int], np.ndarray],
                        token_offsets, atoms: Sequence[int], images: Sequence[int],
                        level1_threshold: float, floor: float = 1.0) -> float:
  """sigma_A the release's way: per image, the mean of the dense activations of A's atoms over
  all (token, atom) entries above 0.5 theta'; averaged over the images with any such entry;
  theta' = max(threshold, floor) when no image has one."""
  theta = max(float(level1_threshold), floor)
  offsets = np.asarray(token_offsets, np.int64)
  atoms = list(atoms)
  per_image = []
  for i in images:
    a, b = int(offsets[i]), int(offsets[i + 1])
    if b <= a:
      continue
    dense = sae.dense_activation(torch.as_tensor(np.asarray(read_tokens(a, b), np.float32)))
    vals = dense[:, atoms].numpy().astype(np.float64)
    above = vals[vals > 0.5 * theta]
    if above.size:
      per_image.append(above.mean())
  return float(np.mean(per_image)) if per_image else theta
