"""Random (non-trivial) parameters for every family, so folding and thresholds matter."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from csae_jax import cascade as cascade_lib
from csae_jax.families import make_config
from csae_jax.models import Model

D, N = 12, 40
FAMILY_OPTIONS = {
    "relu": {},
    "pannealing": {},
    "topk": {"k": 5},
    "batchtopk": {"k": 5},
    "jumprelu": {},
    "gated": {},
    "matryoshka": {"k": 5, "group_sizes": (10, 30)},
    "stacked": {"k": 6, "n2": 8, "k2": 2},
}


def _linear(rng, d, n, bias_scale=0.3):
  w_dec = rng.normal(size=(n, d))
  w_dec /= np.linalg.norm(w_dec, axis=1, keepdims=True)
  return {"W_enc": (w_dec.T + 0.3 * rng.normal(size=(d, n))).astype(np.float32),
          "b_enc": (bias_scale * rng.normal(size=n)).astype(np.float32),
          "W_dec": w_dec.astype(np.float32),
          "b_dec": (bias_scale * rng.normal(size=d)).astype(np.float32)}


def _to_jax(tree):
  return {k: _to_jax(v) if isinstance(v, dict) else jnp.asarray(v) for k, v in tree.items()}


def random_flat(family: str, seed: int = 0, d: int = D, n: int = N):
  """Random parameters built in NumPy (no JAX init: keeps the tests fast)."""
  cfg = make_config(family, d=d, n=n, **FAMILY_OPTIONS[family])
  model = Model(family, cfg)
  rng = np.random.default_rng(seed)
  if family == "stacked":
    params = {"sae1": _linear(rng, d, n), "sae2": _linear(rng, n, cfg.n2)}
  else:
    params = _linear(rng, d, n)
  if family == "jumprelu":
    params["log_threshold"] = np.log(rng.uniform(0.2, 0.6, size=n)).astype(np.float32)
  if family == "gated":
    del params["b_enc"]
    for name in ("b_gate", "r_mag", "b_mag"):
      params[name] = (0.3 * rng.normal(size=n)).astype(np.float32)
  state = dict(model._impl.init_state(cfg))
  if "threshold" in state:
    state["threshold"] = jnp.asarray(0.35, jnp.float32)
  return model, _to_jax(params), state


def random_cascade(seed: int = 0, d: int = D, n1: int = N, n2: int = 10, n3: int | None = None):
  sizes = [(n1, 5), (n2, 1)] + ([(n3, 1)] if n3 else [])
  levels = tuple(cascade_lib.Level("batchtopk", make_config("batchtopk", d=d, n=n, k=k, aux_k=None))
                 for n, k in sizes)
  cfg = cascade_lib.Config(levels=levels)
  cfg.validate()
  model = Model("cascade", cfg)
  rng = np.random.default_rng(seed)
  params = tuple(_to_jax(_linear(rng, d, n, bias_scale=0.1)) for n, _ in sizes)
  state = tuple(dict(model._impl.init_state(cfg)[i], threshold=jnp.asarray(t, jnp.float32))
                for i, t in zip(range(len(sizes)), (0.3, 0.2, 0.1)))
  return model, params, state


def raw_batch(seed: int = 1, rows: int = 32, d: int = D, scale: float = 3.7):
  return (scale * np.random.default_rng(seed).normal(size=(rows, d))).astype(np.float32)
