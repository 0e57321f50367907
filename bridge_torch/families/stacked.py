"""Stacked SAE (SPEC 2.8): a TopK SAE on TopK codes; at inference Level 1 is params["sae1"]."""
from __future__ import annotations

from bridge_torch.families import base


def encode(p, state, x, config):
  del state
  return base.row_topk(base.relu_centred(p["sae1"], x), config["k"])


def dense_activation(p, x, config=None):
  return base.relu_centred(p["sae1"], x, config)


def decode(p, codes, config=None):
  return base.linear_decode(p["sae1"], codes, config)


def atoms(p):
  return p["sae1"]["W_dec"]
