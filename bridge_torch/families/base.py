"""Pieces several PyTorch family mirrors share (the maths of csae_jax/families/base.py, SPEC 2)."""
from __future__ import annotations

import torch


def centred_preact(p, x):
  """W_enc (x - b_dec) + b_enc, the pre-activation of the ReLU/TopK/BatchTopK families."""
  return (x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]


def relu_centred(p, x, config=None):
  del config
  return torch.relu(centred_preact(p, x))


def row_topk(z, k):
  """Per-row top-k keeping entries >= the k-th value, as ops.row_topk_mask_static."""
  k = min(int(k), z.shape[-1])
  thr = torch.topk(z, k, dim=-1).values.min(-1, keepdim=True).values
  return z * (z >= thr).to(z.dtype)


def batch_topk(z, k):
  """Keep the B*k largest entries over the whole batch (BatchTopK before a threshold exists)."""
  flat = z.reshape(-1)
  kk = min(int(k) * z.shape[0], flat.numel())
  idx = torch.topk(flat, kk).indices
  keep = torch.zeros_like(flat, dtype=torch.bool)
  keep[idx] = True
  return (flat * keep.to(z.dtype)).reshape(z.shape)


def linear_decode(p, codes, config=None):
  del config
  return codes @ p["W_dec"] + p["b_dec"]


def decoder_rows(p):
  return p["W_dec"]
