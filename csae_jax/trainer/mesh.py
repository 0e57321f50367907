"""Device mesh and the layout of every array of the train state (docs/design.md: Mesh layout).

Mesh axes ("data", "model").
  batch          [B, d]    rows split over "data", replicated over "model"
  W_enc          [d, n]    latent dim split over "model" (replicated when mesh.model == 1)
  W_dec          [n, d]    latent dim (rows = atoms) split over "model"
  per-latent     [n]       split over "model"; b_dec [d] and scalars replicated
                 (each family declares its latent axes: FamilySpec.latent_axes)
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

from csae_jax.families.base import Latent
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


def _path_keys(path) -> tuple:
  """Dict keys and sequence indices of a pytree path (optimizer-state attribute names dropped)."""
  keys = []
  for entry in path:
    if hasattr(entry, "key"):
      keys.append(("k", entry.key))
    elif hasattr(entry, "idx"):
      keys.append(("i", entry.idx))
  return tuple(keys)


def declared_axes(latent_axes) -> dict[tuple, int]:
  """{parameter path: latent axis} from the families' declared latent axes (Model.latent_axes)."""
  if latent_axes is None:
    return {}
  leaves = jax.tree_util.tree_flatten_with_path(
      latent_axes, is_leaf=lambda x: x is None or isinstance(x, Latent))[0]
  return {_path_keys(path): leaf.axis for path, leaf in leaves if isinstance(leaf, Latent)}


def _latent_dim(path, shape, axes: dict[tuple, int]) -> int | None:
  """The declared latent axis of the parameter this leaf belongs to (None: none).

  Optimizer state wraps the parameter tree (chain index, .mu, ...): a leaf belongs to the
  parameter whose path is the longest suffix of its own, and is split like it when it has the
  parameter's rank (Adam moments do; scalar counters do not).
  """
  keys = _path_keys(path)
  best, best_len = None, -1
  for p, axis in axes.items():
    if len(p) <= len(keys) and keys[len(keys) - len(p):] == p and len(p) > best_len:
      best, best_len = axis, len(p)
  if best is None or best >= len(shape):
    return None
  return best


def param_spec(path, shape, axes: dict[tuple, int], model_size: int) -> P:
  if model_size <= 1:
    return P()
  dim = _latent_dim(path, shape, axes)
  if dim is None or shape[dim] % model_size:
    return P()
  spec = [None] * len(shape)
  spec[dim] = "model"
  return P(*spec)


def zero_spec(path, shape, axes: dict[tuple, int], mesh: Mesh) -> P:
  """Parameter spec plus a ("model", "data") split of one dimension (ZeRO)."""
  base = param_spec(path, shape, axes, mesh.shape["model"])
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


def state_layout(mesh: Mesh, abstract_state, shard_opt_state: bool = True,
                 latent_axes=None) -> Layout:
  """NamedShardings for a TrainState (of arrays or ShapeDtypeStructs).

  latent_axes: Model.latent_axes(), the families' declaration of which axis of each parameter
  indexes latents; needed when the mesh has a "model" axis (> 1) to split.
  """
  msize = mesh.shape["model"]
  if msize > 1 and latent_axes is None:
    raise ValueError(f"a mesh with model={msize} splits latent axes: pass latent_axes="
                     "model.latent_axes()")
  axes = declared_axes(latent_axes)

  def for_params(tree):
    return jax.tree_util.tree_map_with_path(
        lambda p, x: NamedSharding(mesh, param_spec(p, x.shape, axes, msize)), tree)

  def for_opt(tree):
    if not shard_opt_state:
      return for_params(tree)
    return jax.tree_util.tree_map_with_path(
        lambda p, x: NamedSharding(mesh, zero_spec(p, x.shape, axes, mesh)), tree)

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
