"""Registry of SAE families keyed by name (SPEC section 2); see base.py for the contract."""
from __future__ import annotations

from types import ModuleType

from csae_jax.families import base
from csae_jax.families import batchtopk
from csae_jax.families import gated
from csae_jax.families import jumprelu
from csae_jax.families import matryoshka
from csae_jax.families import pannealing
from csae_jax.families import relu
from csae_jax.families import stacked
from csae_jax.families import topk

FAMILIES: dict[str, ModuleType] = {
    "relu": relu,
    "topk": topk,
    "batchtopk": batchtopk,
    "jumprelu": jumprelu,
    "gated": gated,
    "pannealing": pannealing,
    "matryoshka": matryoshka,
    "stacked": stacked,
}


def get_family(name: str) -> ModuleType:
  try:
    return FAMILIES[name]
  except KeyError:
    raise ValueError(f"unknown SAE family {name!r}; known families: "
                     f"{', '.join(sorted(FAMILIES))}") from None


def make_config(name: str, **fields):
  """Build and validate a family's Config; unknown field names raise with the valid ones."""
  fam = get_family(name)
  import dataclasses
  known = {f.name for f in dataclasses.fields(fam.Config)}
  unknown = sorted(set(fields) - known)
  if unknown:
    raise ValueError(f"family {name!r} has no option(s) {unknown}; options: {sorted(known)}")
  for key, value in fields.items():
    if isinstance(value, list):
      fields[key] = tuple(value)
  cfg = fam.Config(**fields)
  cfg.validate()
  return cfg


__all__ = ["FAMILIES", "get_family", "make_config", "base"]
