"""Device mesh and the layout of every array of the train state (docs/design.md: Mesh layout).

Mesh axes ("data", "model").
  batch          [B, d]    rows split over "data", replicated over "model"
  W_enc          [d, n]    latent dim split over "model" (replicated when mesh.model == 1)
  W_dec          [n, d]    latent dim (rows = atoms) split over "model"
  per-latent     [n]       split over "model"; b_dec [d] and scalars replicated
  Adam moments   like the parameter, plus the largest dimension divisible by the device count
                 split over ("model", "data") (ZeRO-1: each device holds 1/N, even when the
                 parameters are replicated); "model" first, so a device's moment slice lies inside
                 its own parameter slice.
  model state    replicated (thresholds, counters: O(n) integers)
The cascade's level-2 work (its batch is the n1 level-1 atoms) is split over all devices by
constraining the level-1 decoder rows to ("data", "model") inside the loss (ShardedModel).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from csae_jax.models import Model

ALL = ("model", "data")


def make_mesh(data: int = -1, model: int = 1, devices=None) -> Mesh:
  devices = list(jax.devices() if devices is None else devices)
  if model <= 0 or len(devices) % model:
    raise ValueError(f"mesh.model={model} must divide the number of devices ({len(devices)})")
  if data == -1:
    data = len(devices) // model
  if data * model != len(devices):
    raise ValueError(f"mesh.data x mesh.model = {data} x {model} = {data * model}, but there are "
                     f"{len(devices)} devices (set mesh.data=-1 to use all)")
  grid = np.asarray(devices, dtype=object).reshape(data, model)
  return Mesh(grid, ("data", "model"))


def _key_name(path) -> str | None:
  for entry in reversed(path):
    key = getattr(entry, "key", None)
    if isinstance(key, str):
      return key
  return None


def _latent_dim(name: str | None, shape, n_of_parent: int | None) -> int | None:
  """Which dimension of a parameter-shaped leaf indexes latents (None: none)."""
  if name == "W_enc" and len(shape) == 2:
    return 1
  if name == "W_dec" and len(shape) == 2:
    return 0
  if len(shape) == 1 and name not in ("b_dec",) and n_of_parent is not None \
      and shape[0] == n_of_parent:
    return 0
  return None


def _latent_sizes(tree) -> dict[tuple, int]:
  """Map from the path prefix of each parameter dict to its latent count (W_enc's last dim)."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if _key_name(path) == "W_enc" and len(getattr(leaf, "shape", ())) == 2:
      out[_param_prefix(path)] = leaf.shape[1]
  return out


def _param_prefix(path) -> tuple:
  """Path of the enclosing parameter dict with optimizer-state wrappers removed."""
  keys = []
  for entry in path[:-1]:
    if hasattr(entry, "key"):
      keys.append(("k", entry.key))
    elif hasattr(entry, "idx"):
      keys.append(("i", entry.idx))
  return tuple(keys)


def _match_prefix(prefix: tuple, sizes: dict[tuple, int]) -> int | None:
  # Optimizer state wraps the parameter tree (chain index, .mu, ...): match by the longest suffix.
  best, best_len = None, -1
  for p, n in sizes.items():
    if len(p) <= len(prefix) and prefix[len(prefix) - len(p):] == p and len(p) > best_len:
      best, best_len = n, len(p)
  return best


def param_spec(path, shape, sizes, model_size: int) -> P:
  if model_size <= 1:
    return P()
  dim = _latent_dim(_key_name(path), shape, _match_prefix(_param_prefix(path), sizes))
  if dim is None or shape[dim] % model_size:
    return P()
  spec = [None] * len(shape)
  spec[dim] = "model"
  return P(*spec)


def zero_spec(path, shape, sizes, mesh: Mesh) -> P:
  """Parameter spec plus a ("model", "data") split of one dimension (ZeRO)."""
  base = param_spec(path, shape, sizes, mesh.shape["model"])
  total = mesh.size
  if total <= 1 or len(shape) == 0:
    return base
  spec = list(base) + [None] * (len(shape) - len(base))
  model_dim = next((i for i, s in enumerate(spec) if s == "model"), None)
  if model_dim is not None:
    if shape[model_dim] % total == 0:
      spec[model_dim] = ALL
      return P(*spec)
    # Otherwise split another dimension over "data" only.
    for i in sorted(range(len(shape)), key=lambda i: -shape[i]):
      if i != model_dim and shape[i] % mesh.shape["data"] == 0 and mesh.shape["data"] > 1:
        spec[i] = "data"
        return P(*spec)
    return P(*spec)
  for i in sorted(range(len(shape)), key=lambda i: -shape[i]):
    if shape[i] % total == 0:
      spec[i] = ALL
      return P(*spec)
  if mesh.shape["data"] > 1:
    for i in sorted(range(len(shape)), key=lambda i: -shape[i]):
      if shape[i] % mesh.shape["data"] == 0:
        spec[i] = "data"
        return P(*spec)
  return base


@dataclasses.dataclass(frozen=True)
class Layout:
  mesh: Mesh
  state: Any        # TrainState of NamedSharding
  batch: NamedSharding            # [B, d] rows over "data"
  batch_indices: NamedSharding    # [B] token indices over "data" (device-resident mode)
  replicated: NamedSharding


def state_layout(mesh: Mesh, abstract_state, shard_opt_state: bool = True) -> Layout:
  """NamedShardings for a TrainState (of arrays or ShapeDtypeStructs)."""
  sizes = _latent_sizes(abstract_state.params)
  msize = mesh.shape["model"]

  def for_params(tree):
    return jax.tree_util.tree_map_with_path(
        lambda p, x: NamedSharding(mesh, param_spec(p, x.shape, sizes, msize)), tree)

  def for_opt(tree):
    if not shard_opt_state:
      return for_params(tree)
    return jax.tree_util.tree_map_with_path(
        lambda p, x: NamedSharding(mesh, zero_spec(p, x.shape, sizes, mesh)), tree)

  rep = NamedSharding(mesh, P())
  state = type(abstract_state)(
      step=rep, params=for_params(abstract_state.params),
      model_state=jax.tree_util.tree_map(lambda _: rep, abstract_state.model_state),
      opt_state=for_opt(abstract_state.opt_state))
  return Layout(mesh, state, NamedSharding(mesh, P("data", None)), NamedSharding(mesh, P("data")),
                rep)


@dataclasses.dataclass(frozen=True)
class ShardedModel(Model):
  """A Model whose cascade loss sees level-(l-1) atoms split over all devices (level-l batch)."""
  atom_sharding: Any = None

  def loss(self, params, state, x, step=None, row_mask=None):
    if self.atom_sharding is not None and self.is_cascade:
      last = len(params) - 1
      params = tuple(
          dict(p, W_dec=jax.lax.with_sharding_constraint(p["W_dec"], self.atom_sharding))
          if l < last and p["W_dec"].shape[0] % self.atom_sharding.mesh.size == 0 else p
          for l, p in enumerate(params))
    return super().loss(params, state, x, step=step, row_mask=row_mask)


def sharded_model(model: Model, mesh: Mesh, split_level2: bool) -> Model:
  if not (split_level2 and model.is_cascade and mesh.size > 1):
    return model
  return ShardedModel(model.name, model.cfg, NamedSharding(mesh, P(("data", "model"), None)))


def per_device_bytes(tree) -> int:
  """Bytes the first local device holds of a pytree of global arrays."""
  dev = jax.local_devices()[0]
  total = 0
  for leaf in jax.tree_util.tree_leaves(tree):
    for shard in leaf.addressable_shards:
      if shard.device == dev:
        total += shard.data.nbytes
  return total


def global_bytes(tree) -> int:
  return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree))
