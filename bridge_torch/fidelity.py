"""Spliced-model fidelity (issue 12, item 5): the vision analogue of SAELens's "CE loss recovered".

Each trained SAE is spliced into the network: the hooked layer's output is replaced by the SAE's
reconstruction of every token, and the rest of the network runs unchanged. Against the unmodified
model, on held-out real images:
  top1_agreement  fraction of images whose top-1 class is unchanged
  kl              mean KL(p_clean || p_spliced) in nats
  kl_mean_ablation  the same with every token replaced by the mean token (a floor)
  kl_recovered    1 - kl / kl_mean_ablation (1 = as good as the clean model, 0 = no better than
                  the mean; SAELens's CE-recovered with mean instead of zero ablation)

  python -m bridge_torch.fidelity --workdir=/tmp/exp_effnet      # EfficientNet-lite0 end to end

builds EfficientNet-lite0 activation stores from scikit-image photos and procedural scenes,
runs the experiments grid (csae_jax.evaluation.experiments) on them, and writes
<workdir>/tables/fidelity.{md,csv} and results/<method>/fidelity.json.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from bridge_torch.steering import resolve_module


def fidelity_metrics(clean_logits, spliced_logits, ablated_logits=None) -> dict:
  """Top-1 agreement and mean KL(clean || spliced) from two [N, classes] logit arrays (float64)."""
  clean = np.asarray(clean_logits, np.float64)
  spliced = np.asarray(spliced_logits, np.float64)
  if clean.shape != spliced.shape or clean.ndim != 2 or not len(clean):
    raise ValueError(f"logits must be two equal [N > 0, classes] arrays, got {clean.shape} and "
                     f"{spliced.shape}")
  if not (np.all(np.isfinite(clean)) and np.all(np.isfinite(spliced))):
    raise ValueError("logits contain NaN/Inf")

  def logp(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))

  def kl(other):
    lp, lq = logp(clean), logp(other)
    return float(np.mean(np.sum(np.exp(lp) * (lp - lq), -1)))

  out = {"top1_agreement": float(np.mean(clean.argmax(-1) == spliced.argmax(-1))),
         "kl": kl(spliced), "images": int(len(clean))}
  if ablated_logits is not None:
    out["kl_mean_ablation"] = kl(np.asarray(ablated_logits, np.float64))
    out["kl_recovered"] = (1.0 - out["kl"] / out["kl_mean_ablation"]
                           if out["kl_mean_ablation"] > 0 else float("nan"))
  return out


@torch.no_grad()
def spliced_logits(model, layer: str, images: torch.Tensor,
                   transform: Callable[[np.ndarray], np.ndarray] | None,
                   channel_axis: int = 1, batch: int = 64) -> np.ndarray:
  """Logits with `layer`'s output tokens (d on channel_axis) replaced by transform(tokens)."""
  def hook(_m, _i, out):
    moved = torch.movedim(out, channel_axis, -1)
    x = moved.reshape(-1, moved.shape[-1]).to(torch.float32).numpy()
    y = np.array(transform(x), np.float32)       # a writable copy for torch
    if y.shape != x.shape or not np.all(np.isfinite(y)):
      raise ValueError(f"the reconstruction has shape {y.shape} (want {x.shape}) or NaN/Inf")
    new = torch.as_tensor(y).reshape(moved.shape).to(out.dtype)
    return torch.movedim(new, -1, channel_axis)

  handle = resolve_module(model, layer).register_forward_hook(hook) if transform else None
  try:
    return torch.cat([model(images[s:s + batch]) for s in range(0, len(images), batch)]).numpy()
  finally:
    if handle is not None:
      handle.remove()


def splice_fidelity(model, layer: str, images: torch.Tensor, reconstruct, *, mean_token=None,
                    channel_axis: int = 1, clean_logits=None) -> dict:
  """fidelity_metrics of the model with `reconstruct` spliced at `layer` (and the mean-token
  ablation when `mean_token` (d,) is given)."""
  clean = clean_logits if clean_logits is not None else spliced_logits(
      model, layer, images, None, channel_axis)
  spliced = spliced_logits(model, layer, images, reconstruct, channel_axis)
  ablated = None
  if mean_token is not None:
    mean = np.asarray(mean_token, np.float32)
    ablated = spliced_logits(model, layer, images,
                             lambda x: np.broadcast_to(mean, x.shape).copy(), channel_axis)
  return fidelity_metrics(clean, spliced, ablated)


def subject_reconstruct(subject) -> Callable[[np.ndarray], np.ndarray]:
  """tokens -> the evaluated method's Level-1 reconstruction (csae_jax Subject, raw scale)."""
  import jax
  fn = jax.jit(subject.level1)

  def reconstruct(x):
    return np.asarray(fn(x, np.ones(len(x), bool))[2])

  return reconstruct
