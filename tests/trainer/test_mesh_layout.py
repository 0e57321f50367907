"""The mesh splits exactly the latent axes the families declare (FamilySpec.latent_axes).

Checked against an independent rule written here from the layout of conventions.py (W_enc (d, n):
axis 1; W_dec (n, d): axis 0; a vector of the level's latent count: axis 0; b_dec never), for every
family's parameters and their Adam moments, and for a cascade. No devices needed: the specs are
computed for a "model" axis of 2.
"""
import dataclasses

import jax
import jax.numpy as jnp
import optax
import pytest
from jax.sharding import PartitionSpec as P

from csae_jax import cascade as cascade_lib
from csae_jax import families
from csae_jax.models import Model
from csae_jax.trainer import mesh as mesh_lib

D, N, N2 = 6, 8, 4


def _config(name, d=D, n=N):
  fields = {f.name for f in dataclasses.fields(families.get_family(name).Config)}
  opts = {k: v for k, v in (("k", 2), ("group_sizes", (3, 5)), ("n2", N2), ("k2", 1))
          if k in fields}
  return families.make_config(name, d=d, n=n, **opts)


def _expected(path, shape, n):
  name = path[-1].key
  if name == "W_enc":
    return P(None, "model")
  if name == "W_dec":
    return P("model", None)
  if len(shape) == 1 and name != "b_dec" and shape[0] == n:
    return P("model")
  return P()


def _check(model, abstract_params, level_n):
  axes = mesh_lib.declared_axes(model.latent_axes())
  for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_params)[0]:
    want = _expected(path, leaf.shape, level_n(path))
    assert mesh_lib.param_spec(path, leaf.shape, axes, 2) == want, (model.name, path)
  moments = jax.eval_shape(optax.adam(1e-3).init, abstract_params)
  checked = 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(moments)[0]:
    if len(leaf.shape) == 0:   # the step counter
      assert mesh_lib.param_spec(path, leaf.shape, axes, 2) == P()
      continue
    param_path = path[2:]      # (chain index, .mu / .nu, <parameter path>)
    want = _expected(param_path, leaf.shape, level_n(param_path))
    assert mesh_lib.param_spec(path, leaf.shape, axes, 2) == want, (model.name, path)
    checked += 1
  assert checked == 2 * len(jax.tree_util.tree_leaves(abstract_params))


@pytest.mark.parametrize("name", list(families.FAMILIES))
def test_flat_family_layout(name):
  cfg = _config(name)
  model = Model(name, cfg)
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((4, D)))[0])
  # Stacked's second SAE has n2 latents; every other parameter counts n.
  _check(model, params, lambda path: N2 if path[0].key == "sae2" else N)


def test_cascade_layout():
  levels = tuple(cascade_lib.Level(f, _config(f, n=n)) for f, n in (("batchtopk", N),
                                                                     ("jumprelu", N2)))
  model = Model("cascade", cascade_lib.Config(levels=levels))
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((4, D)))[0])
  _check(model, params, lambda path: (N, N2)[path[0].idx])


def test_declared_axes_are_keyed_by_parameter_path():
  model = Model("relu", _config("relu"))
  assert mesh_lib.declared_axes(model.latent_axes()) == {
      (("k", "W_enc"),): 1, (("k", "b_enc"),): 0, (("k", "W_dec"),): 0}
  # an undeclared parameter is replicated, whatever its name
  assert mesh_lib.param_spec((jax.tree_util.DictKey("W_enc"),), (D, N), {}, 2) == P()
