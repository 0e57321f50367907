"""Reference embedding backbones: EfficientNet-lite0 (offline weights) and a transformers model."""
import numpy as np
import pytest
import torch
import transformers

from extract_torch import embeddings, sources


@pytest.fixture(scope="module")
def images():
  src = sources.procedural_source(2, size=40)
  return [src.load(i) for i in range(4)]


def test_efficientnet_lite0_embedding_is_the_pre_classifier_pool(images, effnet):
  bb = effnet
  emb = bb.embed(images)
  assert emb.shape == (4, 1280) and emb.dtype == np.float32 and np.isfinite(emb).all()
  # independent: the package's own forward (pool -> dropout(eval) -> fc) equals fc(our embedding)
  x = bb.preprocess(images)
  with torch.no_grad():
    logits = bb.model(x)
    ours = bb.model._fc(torch.from_numpy(emb))
  torch.testing.assert_close(ours, logits, rtol=1e-4, atol=1e-4)
  # real ImageNet weights: predictions are confident, not uniform
  assert torch.softmax(logits, -1).max(-1).values.min() > 5.0 / 1000


def test_hf_backbone_clip_and_cls(images, tmp_path):
  vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                image_size=32, patch_size=8)
  clip = transformers.CLIPModel(transformers.CLIPConfig(
      vision_config=vision, text_config=dict(hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=1, num_attention_heads=2,
                                             vocab_size=100), projection_dim=16)).eval()
  clip.save_pretrained(tmp_path / "clip")
  cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
  cls(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
      tmp_path / "clip")
  bb = embeddings.make_backbone(f"hf:{tmp_path / 'clip'}")
  emb = bb.embed(images)
  assert bb.dim == 16 and emb.shape == (4, 16)
  pv = bb.processor(images=images, return_tensors="pt")["pixel_values"]
  with torch.no_grad():
    ref = clip.visual_projection(clip.vision_model(pixel_values=pv).pooler_output)
  np.testing.assert_allclose(emb, ref.numpy(), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="unknown embedding backbone"):
    embeddings.make_backbone("resnet50")
