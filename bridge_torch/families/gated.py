"""Gated SAE (SPEC 2.5): 1[pi_gate > 0] * ReLU(pi_mag); mirrors csae_jax/families/gated.py."""
from __future__ import annotations

import torch

from bridge_torch.families import base


def paths(p, x):
  proj = (x - p["b_dec"]) @ p["W_enc"]
  return proj + p["b_gate"], torch.exp(p["r_mag"]) * proj + p["b_mag"]


def encode(p, state, x, config):
  del state, config
  gate, mag = paths(p, x)
  return (gate > 0).to(x.dtype) * torch.relu(mag)


def dense_activation(p, x, config=None):
  """The magnitude path: what each latent would contribute if its gate were open."""
  del config
  return torch.relu(paths(p, x)[1])


decode = base.linear_decode
atoms = base.decoder_rows
