"""Matryoshka SAE (SPEC 2.7): at inference one BatchTopK dictionary; mirrors matryoshka.py."""
from __future__ import annotations

from bridge_torch.families import batchtopk

encode = batchtopk.encode
dense_activation = batchtopk.dense_activation
decode = batchtopk.decode
atoms = batchtopk.atoms
