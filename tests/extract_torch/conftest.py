"""Session fixtures: tiny random-weight models (built and saved once) and their hooked loaders."""
import os

import pytest
from extract_torch import pipeline
from extract_torch import tiny_models


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
  """{family: saved model dir} for qwen3_vl, gemma3, llava."""
  root = tmp_path_factory.mktemp("tiny_models")
  return {f: tiny_models.build_tiny(f, os.path.join(root, f)) for f in tiny_models.FAMILIES}


@pytest.fixture(scope="session")
def hooked(tiny_dirs):
  """{family: HookedModel at the family's paper layer}, loaded with from_pretrained once."""
  out = {}
  for family, path in tiny_dirs.items():
    out[family] = pipeline.load_hooked_model(pipeline.ExtractConfig(model=path, out="unused"))
  return out


@pytest.fixture(scope="session")
def effnet():
  """The offline reference-embedding backbone (real ImageNet EfficientNet-lite0 weights)."""
  from extract_torch.embeddings import make_backbone
  return make_backbone("efficientnet_lite0")
