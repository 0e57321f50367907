"""PyTorch SAE modules built from a csae_jax export; they reproduce the JAX encode/decode.

One `TorchSAE` per level: the same maths as csae_jax/families (SPEC 2), float32, layout
W_enc (d, n), W_dec (n, d) row j = atom j. `load_export(path)` gives every level of a flat or
cascaded export plus the cascade's parent maps (SPEC 4). Exports are read with safetensors (no
pickle).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import nn

from csae_jax.export import ExportError, read_export_files

FAMILIES = ("relu", "pannealing", "topk", "batchtopk", "matryoshka", "jumprelu", "gated", "stacked")


def _relu_centred(x, p):
  return torch.relu((x - p["b_dec"]) @ p["W_enc"] + p["b_enc"])


def _row_topk(z, k):
  """Per-row top-k keeping entries >= the k-th value, as ops.row_topk_mask_static."""
  k = min(int(k), z.shape[-1])
  thr = torch.topk(z, k, dim=-1).values.min(-1, keepdim=True).values
  return z * (z >= thr).to(z.dtype)


def _batch_topk(z, k):
  """Keep the B*k largest entries over the whole batch (BatchTopK before a threshold exists)."""
  flat = z.reshape(-1)
  kk = min(int(k) * z.shape[0], flat.numel())
  idx = torch.topk(flat, kk).indices
  keep = torch.zeros_like(flat, dtype=torch.bool)
  keep[idx] = True
  return (flat * keep.to(z.dtype)).reshape(z.shape)


class TorchSAE(nn.Module):
  """One SAE level for raw activations. Buffers hold the weights (inference only)."""

  def __init__(self, family: str, config: dict, params: dict, state: dict | None = None):
    super().__init__()
    if family not in FAMILIES:
      raise ValueError(f"unknown SAE family {family!r}; known: {FAMILIES}")
    self.family = family
    self.config = dict(config)
    flat = {}
    for name, value in params.items():
      if isinstance(value, dict):
        for sub, v in value.items():
          flat[f"{name}__{sub}"] = v
      else:
        flat[name] = value
    for name, value in flat.items():
      self.register_buffer(name, torch.as_tensor(np.asarray(value, np.float32)))
    state = state or {}
    theta = state.get("threshold")
    self.register_buffer("threshold", torch.tensor(
        float(np.asarray(theta)) if theta is not None else -1.0, dtype=torch.float32))
    core = "sae1__" if family == "stacked" else ""
    self.d = int(getattr(self, core + "W_dec").shape[1])
    self.n = int(getattr(self, core + "W_dec").shape[0])

  # parameters as dicts, matching the JAX names
  def _p(self, prefix: str = "") -> dict[str, torch.Tensor]:
    names = ("W_enc", "b_enc", "W_dec", "b_dec")
    return {k: getattr(self, prefix + k) for k in names if hasattr(self, prefix + k)}

  def atoms(self) -> torch.Tensor:
    """(n, d) decoder rows (the atoms a higher cascade level reads)."""
    return self.sae1__W_dec if self.family == "stacked" else self.W_dec

  def check_input(self, x: torch.Tensor) -> None:
    if x.shape[-1] != self.d:
      raise ValueError(f"input has dimension {x.shape[-1]} but the SAE expects d={self.d}")

  def dense_activation(self, x: torch.Tensor) -> torch.Tensor:
    """ReLU of the pre-activation, no sparsification (parents, steering; SPEC 4-5)."""
    self.check_input(x)
    f = self.family
    if f == "jumprelu":
      return torch.relu(x @ self.W_enc + self.b_enc)
    if f == "gated":
      return torch.relu(self._gated_paths(x)[1])
    if f == "stacked":
      return _relu_centred(x, self._p("sae1__"))
    return _relu_centred(x, self._p())

  def _gated_paths(self, x):
    proj = (x - self.b_dec) @ self.W_enc
    return proj + self.b_gate, torch.exp(self.r_mag) * proj + self.b_mag

  def encode(self, x: torch.Tensor) -> torch.Tensor:
    """Inference codes, as the family's `encode` (SPEC 2)."""
    self.check_input(x)
    f = self.family
    if f in ("relu", "pannealing"):
      return _relu_centred(x, self._p())
    if f == "topk":
      return _row_topk(_relu_centred(x, self._p()), self.config["k"])
    if f == "stacked":
      return _row_topk(_relu_centred(x, self._p("sae1__")), self.config["k"])
    if f in ("batchtopk", "matryoshka"):
      z = _relu_centred(x, self._p())
      theta = float(self.threshold)
      if theta >= 0:
        return z * (z > theta).to(z.dtype)
      return _batch_topk(z, self.config["k"])
    if f == "jumprelu":
      pi = x @ self.W_enc + self.b_enc
      return pi * (pi > torch.exp(self.log_threshold)).to(pi.dtype)
    if f == "gated":
      gate, mag = self._gated_paths(x)
      return (gate > 0).to(x.dtype) * torch.relu(mag)
    raise AssertionError(f)

  def decode(self, codes: torch.Tensor) -> torch.Tensor:
    if self.family == "stacked":
      return codes @ self.sae1__W_dec + self.sae1__b_dec
    return codes @ self.W_dec + self.b_dec

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.decode(self.encode(x))


@dataclasses.dataclass
class TorchExport:
  """Every level of an export (level 1 reads raw activations; level l reads level l-1's atoms)."""
  config: dict
  levels: list[TorchSAE]
  parents: list[torch.Tensor]   # parents[i] maps level-(i+1) atoms to level-(i+2) units; -1 none
  path: Path | None = None

  @property
  def d(self) -> int:
    return self.levels[0].d

  @property
  def level1(self) -> TorchSAE:
    return self.levels[0]

  @property
  def hooked_module(self) -> str | None:
    return self.config.get("hooked_module")

  def children(self, unit: int, level: int = 2) -> np.ndarray:
    """Level-(level-1) atoms whose parent is `unit` of `level`."""
    if level < 2 or level - 2 >= len(self.parents):
      raise ValueError(f"this export has parent maps for levels 2..{len(self.parents) + 1}, "
                       f"not {level}")
    return np.flatnonzero(self.parents[level - 2].numpy() == unit)


def load_export(path) -> TorchExport:
  """Read a native export (csae_jax.export.export_model) into PyTorch modules."""
  config, tensors = read_export_files(path)
  levels = []
  for i, lv in enumerate(config["levels"], start=1):
    prefix = f"level{i}."
    params, state = {}, {}
    for name, arr in tensors.items():
      if not name.startswith(prefix):
        continue
      rest = name[len(prefix):]
      if rest.startswith("state."):
        state[rest[len("state."):]] = arr
      elif "." in rest:
        outer, inner = rest.split(".", 1)
        params.setdefault(outer, {})[inner] = arr
      else:
        params[rest] = arr
    if lv["family"] not in FAMILIES:
      raise ExportError(f"{path}: level {i} family {lv['family']!r} is not supported by the "
                        f"PyTorch bridge ({FAMILIES})")
    levels.append(TorchSAE(lv["family"], lv["config"], params, state).eval())
  parents = [torch.as_tensor(tensors[f"parents.level{l}"].astype(np.int64))
             for l in range(2, len(levels) + 1) if f"parents.level{l}" in tensors]
  return TorchExport(config, levels, parents, Path(path))
