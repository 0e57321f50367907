"""Vector quantisation: one-hot on the nearest centre; mirrors csae_jax/families/vq.py."""
from __future__ import annotations

import torch

from bridge_torch.families import base


def scores(p, x, scale=1.0):
  w = p["W_dec"]
  return ((x - p["b_dec"]) @ w.T) / scale - 0.5 * (w * w).sum(-1)


def encode(p, state, x, config):
  del config
  scale = float(state.get("scale", 1.0)) if state else 1.0
  s = scores(p, x, scale)
  codes = torch.zeros_like(s)
  codes.scatter_(-1, s.argmax(-1, keepdim=True), scale)
  return codes


def dense_activation(p, x, config=None):
  del config
  s = scores(p, x)
  if s.shape[-1] == 1:
    return torch.ones_like(s)
  top2 = torch.topk(s, 2, dim=-1).values
  runner_up = torch.where(s >= top2[:, :1], top2[:, 1:2], top2[:, :1])
  return torch.relu(s - runner_up)


decode = base.linear_decode
atoms = base.decoder_rows
