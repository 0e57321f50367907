"""PyTorch mirror of csae_jax.families: the same keys, one file per family (inference only).

Each module gives the family's inference maths on a dict of float32 tensors laid out as the JAX
params (W_enc (d, n), W_dec (n, d) row j = atom j; nested dicts for composed families):
  encode(params, state, x, config) -> codes      as the JAX family's `encode`
  decode(params, codes, config)    -> xhat
  dense_activation(params, x, config) -> (B, n)  ReLU of the pre-activation (parents, steering)
  atoms(params)                    -> (n, d)     decoder rows (what a higher cascade level reads)
`state` holds the exported inference state ("threshold": 0-d tensor, -1 = not set); `config` is the
family's Config fields as a dict. tests/families/test_registry.py checks the keys match the JAX
registry; tests/bridge_torch/test_sae_bridge.py checks every family matches JAX to 1e-5.
No JAX here: the bridge runs where only PyTorch is installed.
"""
from __future__ import annotations

from types import ModuleType

from bridge_torch.families import base
from bridge_torch.families import batchtopk
from bridge_torch.families import gated
from bridge_torch.families import jumprelu
from bridge_torch.families import matryoshka
from bridge_torch.families import pannealing
from bridge_torch.families import relu
from bridge_torch.families import stacked
from bridge_torch.families import topk
from bridge_torch.families import vq

FAMILIES: dict[str, ModuleType] = {
    "batchtopk": batchtopk,
    "topk": topk,
    "relu": relu,
    "pannealing": pannealing,
    "gated": gated,
    "jumprelu": jumprelu,
    "matryoshka": matryoshka,
    "stacked": stacked,
    "vq": vq,
}

CONTRACT = ("encode", "decode", "dense_activation", "atoms")


def get_family(name: str) -> ModuleType:
  try:
    return FAMILIES[name]
  except KeyError:
    raise ValueError(f"unknown SAE family {name!r}; known: {tuple(FAMILIES)}") from None


__all__ = ["FAMILIES", "CONTRACT", "get_family", "base"]
