"""ReLU SAE (SPEC 2.1): f = ReLU(W_enc (x - b_dec) + b_enc); mirrors csae_jax/families/relu.py."""
from __future__ import annotations

from bridge_torch.families import base


def encode(p, state, x, config):
  del state
  return base.relu_centred(p, x, config)


dense_activation = base.relu_centred
decode = base.linear_decode
atoms = base.decoder_rows
