"""Release-faithful steering statistics (issue 12, item 4) on a hand-built ReLU SAE whose dense
activation is relu(x) (W_enc = I, biases 0), so every figure is computed by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bridge_torch import release_steering as rs
from bridge_torch import steering
from bridge_torch.experiment import SteerConfig, plan_clusters
from bridge_torch.sae import TorchExport, TorchSAE

D = 4


def _identity_sae(threshold=-1.0):
  p = {"W_enc": np.eye(D, dtype=np.float32), "b_enc": np.zeros(D, np.float32),
       "W_dec": np.eye(D, dtype=np.float32), "b_dec": np.zeros(D, np.float32)}
  return TorchSAE("relu", {"n": D}, p, {"threshold": np.float32(threshold)})


# image 0: 2 tokens, image 1: 3 tokens, image 2: 1 token
X = np.array([[2.0, 0.2, -1, 0], [0.4, 3.0, 0, 0],                 # image 0
              [1.0, 1.0, 0, 0], [0.0, 0.6, 0, 5], [0.3, 0.0, 0, 0],  # image 1
              [0.1, 0.1, 9.0, 0]], np.float32)                      # image 2
OFFSETS = np.array([0, 2, 5, 6])


def test_dense_image_means_and_top20_alive():
  v, alive = rs.dense_image_means(_identity_sae(), lambda a, b: X[a:b], OFFSETS, chunk_tokens=3)
  want = np.array([[1.2, 1.6, 0, 0], [1.3 / 3, 1.6 / 3, 0, 5 / 3], [0.1, 0.1, 9, 0]])
  np.testing.assert_allclose(v, want, rtol=1e-6)
  np.testing.assert_array_equal(alive, [True, True, True, True])   # any positive value in top-20


def test_token_concept_scale_by_hand():
  sae = _identity_sae(threshold=0.5)     # theta' = max(0.5, floor 1.0) = 1.0; keep > 0.5
  # A = {0, 1}; image 0 entries above .5: 2.0, 3.0 -> 2.5; image 1: 1.0, 1.0, 0.6 -> 0.8667
  got = rs.token_concept_scale(sae, lambda a, b: X[a:b], OFFSETS, [0, 1], [0, 1], 0.5)
  assert got == pytest.approx((2.5 + 2.6 / 3) / 2, rel=1e-6)
  # image 2 has no entry of A above 0.5: skipped, not counted as zero
  got2 = rs.token_concept_scale(sae, lambda a, b: X[a:b], OFFSETS, [0, 1], [0, 2], 0.5)
  assert got2 == pytest.approx(2.5, rel=1e-6)
  # no entry anywhere: fallback theta'
  assert rs.token_concept_scale(sae, lambda a, b: X[a:b], OFFSETS, [0, 1], [2], 3.0) == 3.0
  # the SPEC reading (threshold per-image means) gives another number on the same data
  v, _ = rs.dense_image_means(sae, lambda a, b: X[a:b], OFFSETS)
  assert steering.concept_scale(v, [0, 1], 0.5, top=2) != pytest.approx(got, rel=1e-3)


def test_plan_clusters_release_switch_ranks_by_dense_means():
  """A unit whose inference code is zero (threshold 10) still ranks images by dense means."""
  sae = _identity_sae(threshold=-1.0)
  parents = torch.as_tensor(np.array([0, 0, 1, 1]))
  ex = TorchExport(config={}, levels=[sae], parents=[parents])
  cfg = SteerConfig(num_clusters=2, clusters=(0, 1), concepts={0: "a", 1: "b"}, top_images=2,
                    release_faithful=True)
  plans = {p.unit: p for p in plan_clusters(ex, lambda a, b: X[a:b], OFFSETS, cfg)}
  # cluster {0, 1}: image sums of dense means 2.8, 0.967, 0.2 -> top images [0, 1]
  np.testing.assert_array_equal(plans[0].top_images, [0, 1])
  assert plans[0].sigma == pytest.approx((2.5 + 2.6 / 3) / 2, rel=1e-6)
  # cluster {2, 3}: sums 0, 5/3, 9 -> [2, 1]; sigma = mean(9.0, 5.0) (one entry each)
  np.testing.assert_array_equal(plans[1].top_images, [2, 1])
  assert plans[1].sigma == pytest.approx(7.0, rel=1e-6)
