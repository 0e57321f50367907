"""Spliced-model fidelity (issue 12, item 5): hand-computed metrics, and EfficientNet-lite0 (real
ImageNet weights) with an exact SAE spliced in (agreement 1, KL 0) versus a zero SAE."""
from __future__ import annotations

import jax
import numpy as np
import pytest
import torch

from bridge_torch import efficientnet_data as ed
from bridge_torch import fidelity as fid
from csae_jax.evaluation import subjects
from csae_jax.models import build_model

LAYER = "_blocks.15"   # 320 channels


def test_fidelity_metrics_by_hand():
  clean = np.array([[0.0, np.log(3.0)], [1.0, 0.0]])       # p = (1/4, 3/4), (e/(1+e), 1/(1+e))
  same = fid.fidelity_metrics(clean, clean + 5.0)           # a shift changes no probability
  assert same["top1_agreement"] == 1.0 and same["kl"] == pytest.approx(0.0, abs=1e-12)
  flipped = clean[:, ::-1]
  p = np.array([[0.25, 0.75], [np.e / (1 + np.e), 1 / (1 + np.e)]])
  q = p[:, ::-1]
  want = np.mean(np.sum(p * np.log(p / q), 1))
  got = fid.fidelity_metrics(clean, flipped, ablated_logits=np.zeros_like(clean))
  assert got["top1_agreement"] == 0.0
  assert got["kl"] == pytest.approx(want, rel=1e-12)
  kl_uniform = np.mean(np.sum(p * np.log(p / 0.5), 1))
  assert got["kl_mean_ablation"] == pytest.approx(kl_uniform, rel=1e-12)
  assert got["kl_recovered"] == pytest.approx(1 - want / kl_uniform, rel=1e-12)
  with pytest.raises(ValueError, match="equal"):
    fid.fidelity_metrics(clean, clean[:1])
  with pytest.raises(ValueError, match="NaN"):
    fid.fidelity_metrics(clean, clean * np.nan)


def _relu_subject(d, exact: bool):
  """A ReLU SAE with W_enc = [I, -I], W_dec = [I; -I]: relu(x) - relu(-x) = x exactly;
  with a zero decoder it reconstructs b_dec = 0."""
  m = build_model({"name": "relu", "d": d, "options": {"n": 2 * d}})
  params, state = m.init(jax.random.PRNGKey(0), np.zeros((4, d), np.float32))
  eye = np.eye(d, dtype=np.float32)
  params = dict(jax.tree_util.tree_map(np.asarray, params))
  params["W_enc"] = np.concatenate([eye, -eye], 1)
  params["W_dec"] = np.concatenate([eye, -eye], 0) * (1.0 if exact else 0.0)
  params["b_enc"] = np.zeros(2 * d, np.float32)
  params["b_dec"] = np.zeros(d, np.float32)
  return subjects.from_model(m, params, state)


@pytest.fixture(scope="module")
def effnet():
  torch.manual_seed(0)
  model = ed.load_efficientnet()
  images, _ = ed.image_set(1, 4, 96, seed=3, photos=ed.PHOTOS[:8])
  return model, images


def test_identity_sae_is_faithful_and_zero_sae_is_not(effnet):
  model, images = effnet
  clean = fid.spliced_logits(model, LAYER, images, None)
  np.testing.assert_allclose(clean, model(images).detach().numpy(), atol=1e-4)
  exact = fid.splice_fidelity(model, LAYER, images,
                              fid.subject_reconstruct(_relu_subject(320, True)),
                              clean_logits=clean)
  assert exact["top1_agreement"] == 1.0 and exact["kl"] < 1e-8
  fmap, _ = ed.layer_output(model, LAYER, images)
  tokens, _ = ed.fmap_tokens(fmap)
  zero = fid.splice_fidelity(model, LAYER, images,
                             fid.subject_reconstruct(_relu_subject(320, False)),
                             mean_token=tokens.mean(0), clean_logits=clean)
  assert zero["top1_agreement"] < 0.5 and zero["kl"] > 1.0
  assert zero["kl_mean_ablation"] > 0.1
  # identity splice through the generic hook equals the clean model
  same = fid.splice_fidelity(model, LAYER, images, lambda x: x, clean_logits=clean)
  assert same["kl"] < 1e-8


def test_suffix_logits_match_full_forward(effnet):
  model, images = effnet
  for layer in ("_blocks.12", "_conv_head"):
    fmap, logits = ed.layer_output(model, layer, images)
    with torch.no_grad():
      np.testing.assert_allclose(ed.suffix_logits(model, layer, fmap).numpy(), logits.numpy(),
                                 atol=1e-4)
  with pytest.raises(ValueError, match="supports"):
    ed.suffix_logits(model, "_bn0", fmap)
