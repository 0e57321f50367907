"""BatchTopK SAE (SPEC 2.3): z * 1[z > theta] once theta is set, batch top-k over x before."""
from __future__ import annotations

from bridge_torch.families import base


def encode(p, state, x, config):
  z = base.relu_centred(p, x)
  theta = float(state["threshold"])
  if theta >= 0:
    return z * (z > theta).to(z.dtype)
  return base.batch_topk(z, config["k"])


dense_activation = base.relu_centred
decode = base.linear_decode
atoms = base.decoder_rows
