"""JumpReLU SAE (SPEC 2.4): pi * 1[pi > exp(log_threshold)], pi = W_enc x + b_enc (not centred)."""
from __future__ import annotations

import torch

from bridge_torch.families import base


def preact(p, x):
  return x @ p["W_enc"] + p["b_enc"]


def encode(p, state, x, config):
  del state, config
  pi = preact(p, x)
  return pi * (pi > torch.exp(p["log_threshold"])).to(pi.dtype)


def dense_activation(p, x, config=None):
  del config
  return torch.relu(preact(p, x))


decode = base.linear_decode
atoms = base.decoder_rows
