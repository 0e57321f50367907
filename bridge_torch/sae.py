"""PyTorch SAE modules built from a csae_jax export; they reproduce the JAX encode/decode.

One `TorchSAE` per level: the same maths as csae_jax/families (SPEC 2) through the PyTorch mirror
registry bridge_torch/families (same keys, one file per family), float32, layout
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

from bridge_torch import families as torch_families
from csae_jax.export import ExportError, read_export_files

FAMILIES = tuple(torch_families.FAMILIES)   # keyed like csae_jax.families.FAMILIES


class TorchSAE(nn.Module):
  """One SAE level for raw activations. Buffers hold the weights (inference only).

  The maths is the family's PyTorch mirror (bridge_torch/families/<family>.py); nested params
  ({"sae1": {...}}) are stored as buffers named "sae1__W_dec", ....
  """

  def __init__(self, family: str, config: dict, params: dict, state: dict | None = None):
    super().__init__()
    torch_families.get_family(family)   # unknown names raise with the known ones
    self.family = family
    self.config = dict(config)
    self._param_names = []
    for name, value in params.items():
      if isinstance(value, dict):
        for sub, v in value.items():
          self._register(f"{name}__{sub}", v)
      else:
        self._register(name, value)
    state = state or {}
    theta = state.get("threshold")
    self.register_buffer("threshold", torch.tensor(
        float(np.asarray(theta)) if theta is not None else -1.0, dtype=torch.float32))
    atoms = self.atoms()
    self.n, self.d = int(atoms.shape[0]), int(atoms.shape[1])

  def _register(self, name, value):
    self.register_buffer(name, torch.as_tensor(np.asarray(value, np.float32)))
    self._param_names.append(name)

  @property
  def impl(self):
    """The family's PyTorch mirror module (bridge_torch/families/<family>.py)."""
    return torch_families.get_family(self.family)

  @property
  def params(self) -> dict:
    """The weights as the JAX params tree (nested dicts for composed families)."""
    out: dict = {}
    for name in self._param_names:
      if "__" in name:
        outer, inner = name.split("__", 1)
        out.setdefault(outer, {})[inner] = getattr(self, name)
      else:
        out[name] = getattr(self, name)
    return out

  @property
  def state(self) -> dict:
    return {"threshold": self.threshold}

  def atoms(self) -> torch.Tensor:
    """(n, d) decoder rows (the atoms a higher cascade level reads)."""
    return self.impl.atoms(self.params)

  def check_input(self, x: torch.Tensor) -> None:
    if x.shape[-1] != self.d:
      raise ValueError(f"input has dimension {x.shape[-1]} but the SAE expects d={self.d}")

  def dense_activation(self, x: torch.Tensor) -> torch.Tensor:
    """ReLU of the pre-activation, no sparsification (parents, steering; SPEC 4-5)."""
    self.check_input(x)
    return self.impl.dense_activation(self.params, x, self.config)

  def encode(self, x: torch.Tensor) -> torch.Tensor:
    """Inference codes, as the family's `encode` (SPEC 2)."""
    self.check_input(x)
    return self.impl.encode(self.params, self.state, x, self.config)

  def decode(self, codes: torch.Tensor) -> torch.Tensor:
    return self.impl.decode(self.params, codes, self.config)

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
