"""TopK SAE (SPEC 2.2): the k largest of the ReLU pre-activation per token; mirrors topk.py."""
from __future__ import annotations

from bridge_torch.families import base


def encode(p, state, x, config):
  del state
  return base.row_topk(base.relu_centred(p, x), config["k"])


dense_activation = base.relu_centred
decode = base.linear_decode
atoms = base.decoder_rows
