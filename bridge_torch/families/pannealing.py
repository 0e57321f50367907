"""P-annealing SAE (SPEC 2.6): at inference the ReLU SAE; mirrors its csae_jax family."""
from __future__ import annotations

from bridge_torch.families import relu

encode = relu.encode
dense_activation = relu.dense_activation
decode = relu.decode
atoms = relu.atoms
