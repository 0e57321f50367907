"""Real-model check (issue 6, item 5): EfficientNet-lite0 with its ImageNet weights, a small CSAE
on its last convolution, and concept clamps that move the predicted probability of the classes of
the cluster's top images (figures: docs/benchmarks.md)."""
from __future__ import annotations

import pytest

from bridge_torch import efficientnet_check as check


@pytest.mark.slow
def test_cluster_clamps_move_class_probabilities(tmp_path):
  cfg = check.CheckConfig()
  model = check.load_efficientnet()
  assert model._fc.out_features == 1000
  out = check.run_check(cfg, out_dir=tmp_path / "csae", model=model, log=lambda s: None)
  rows = out["rows"]
  assert len(rows) >= 4, out["clusters"]
  # insertion: P(classes of the cluster's top images) rises on images not already of those
  # classes, on average, and by more than clamping as many random atoms to the same value
  assert out["insert_gain_cluster"] > 0
  assert out["insert_gain_cluster"] > out["insert_gain_control"]
  # suppression: P(those classes) falls on the cluster's own top images
  assert out["suppress_change_cluster"] < 0
  assert out["suppress_lowered"] >= 0.75 * len(rows)
