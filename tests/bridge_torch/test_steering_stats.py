"""sigma_A, image codes, clusters and arms (SPEC 5) against NumPy / hand-computed values."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.bridge_torch.steer_helpers import random_cascade

from bridge_torch import sae as tsae
from bridge_torch import steering
from csae_jax import export


def test_image_codes_match_numpy(tmp_path):
  model, params, state = random_cascade(d=12, n1=40)
  ex = tsae.load_export(export.export_model(tmp_path / "c", model, params, state))
  rng = np.random.default_rng(0)
  sizes = [5, 1, 9, 3, 7, 2]
  offsets = np.concatenate([[0], np.cumsum(sizes)])
  x = rng.normal(size=(offsets[-1], 12)).astype(np.float32)
  v, alive = steering.image_codes(ex.level1, lambda a, b: x[a:b], offsets, chunk_tokens=8)
  with torch.no_grad():
    codes = ex.level1.encode(torch.as_tensor(x)).numpy()
    dense = ex.level1.dense_activation(torch.as_tensor(x)).numpy()
  want = np.stack([codes[offsets[i]:offsets[i + 1]].mean(0) for i in range(len(sizes))])
  np.testing.assert_allclose(v, want, rtol=1e-5, atol=1e-6)
  want_alive = np.zeros(40, bool)
  for row in dense:
    top = np.argsort(-row)[:12]
    want_alive[top[row[top] > 1e-3]] = True
  np.testing.assert_array_equal(alive, want_alive)


def test_concept_scale_by_hand():
  # 12 images x 4 atoms; A = {1, 2}
  v = np.zeros((12, 4), np.float32)
  v[:, 1] = np.arange(12) * 0.1          # image 11 has the largest
  v[:, 2] = 0.05
  v[3, 2] = 5.0                          # image 3 ranks first
  tops = steering.top_images(v, [1, 2], top=10)
  assert tops[0] == 3 and set(tops) == set(range(2, 12))
  # theta' = max(0.4, 1.0) = 1.0; values > 0.5 over the top-10 images: 0.6..1.1 (atom 1) and 5.0
  vals = [0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 5.0]
  assert steering.concept_scale(v, [1, 2], 0.4, top=10) == pytest.approx(np.mean(vals), rel=1e-6)
  # theta' = 3 (threshold above the floor): only 5.0 survives
  assert steering.concept_scale(v, [1, 2], 3.0, top=10) == pytest.approx(5.0)
  # nothing above: fallback theta'
  assert steering.concept_scale(v * 0, [1, 2], 0.2, top=10) == 1.0


def test_clusters_arms_and_choice():
  parents = torch.tensor([0, 0, 0, 1, 1, 2, -1, 2])
  ex = tsae.TorchExport({}, [], [parents])
  alive = np.array([1, 1, 0, 1, 1, 1, 1, 0], bool)
  cands = steering.clusters(ex, alive)
  assert {k: v.tolist() for k, v in cands.items()} == {0: [0, 1], 1: [3, 4]}
  assert steering.choose_clusters(cands, 5, seed=0) in ([0, 1], [1, 0])
  assert steering.choose_clusters(cands, 1, seed=3) == steering.choose_clusters(cands, 1, seed=3)
  with pytest.raises(ValueError, match=r"\[2\] are not clusters"):
    steering.choose_clusters(cands, 1, seed=0, given=[2])
  v = np.zeros((3, 8), np.float32)
  v[0, [3, 4]] = [0.2, 0.9]
  v[1, [3, 4]] = [0.3, 0.1]
  vm = np.array([[0.0, 0.5, 0.9, 0.1], [0.1, 0.6, 0.8, 0.0], [0.9, 0.0, 0.0, 0.0]])
  arms = steering.make_arms(v, [3, 4], alive, seed=0, v_matryoshka=vm, top=2)
  assert arms.cluster == (3, 4) and arms.best_child == (4,)
  assert arms.rand1[0] in (0, 1, 5, 6)                     # alive, outside A
  assert arms.matryoshka == (2, 1)                          # lowest mean rank on images 0 and 1
  flat = tsae.TorchExport({}, [], [])
  with pytest.raises(ValueError, match="no Level-2 parent map"):
    steering.clusters(flat, alive)
