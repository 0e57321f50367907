"""Registry of SAE families keyed by name (SPEC section 2); see base.py for the contract.

Each family module declares its facts in `SPEC` (base.FamilySpec); code elsewhere reads them
(`spec(name)`, `names(...)`) instead of comparing family names. docs/families.md has the contract.
"""
from __future__ import annotations

import dataclasses
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
from csae_jax.families import vq

# In the order of the paper's Table 1 (tables and the experiment grid list families this way),
# then the families outside it.
FAMILIES: dict[str, ModuleType] = {
    "batchtopk": batchtopk,
    "topk": topk,
    "relu": relu,
    "pannealing": pannealing,
    "gated": gated,
    "jumprelu": jumprelu,
    "matryoshka": matryoshka,
    "stacked": stacked,
    "vq": vq,   # not a Table-1 method (SPEC.table1 False): a cascade Level-2 option
}


def get_family(name: str) -> ModuleType:
  try:
    return FAMILIES[name]
  except KeyError:
    raise ValueError(f"unknown SAE family {name!r}; known families: "
                     f"{', '.join(sorted(FAMILIES))}") from None


def spec(name: str) -> base.FamilySpec:
  """The declared facts of a family (raises with the known names for an unknown one)."""
  return get_family(name).SPEC


def names(**where) -> tuple[str, ...]:
  """Registered family names whose SPEC has every given attribute value, in registry order.

  names(hierarchy="flat") are the families that need a post-hoc pair to form two levels.
  """
  return tuple(n for n, fam in FAMILIES.items()
               if all(getattr(fam.SPEC, k) == v for k, v in where.items()))


def make_config(name: str, **fields):
  """Build and validate a family's Config; unknown field names raise with the valid ones."""
  fam = get_family(name)
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


__all__ = ["FAMILIES", "get_family", "make_config", "names", "spec", "base"]
