"""Walks both registries: every family declares every fact, and the facts are true (issue 9).

The JAX registry (csae_jax.families) and its PyTorch mirror (bridge_torch.families) have the same
keys; each FamilySpec field has its type; and the declarations are checked against what the family
computes on a tiny config: latent axes against init's shapes, `centred` against a shift of x and
b_dec, `selection` against the codes' sparsity, the SAELens form against its layout.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bridge_torch import families as torch_families
from csae_jax import families
from csae_jax.families import base

D, N, N2, B = 6, 8, 4, 10
NAMES = list(families.FAMILIES)
CONTRACT = ("init", "init_state", "encode", "decode", "loss", "dense_activation", "fold_scale")
FIELD_TYPES = {"name": str, "display": str, "selection": str, "centred": bool, "latent_axes": dict,
               "hierarchy": str, "cascade_level": bool,
               "saelens_architecture": (str, type(None)), "saelens": (type(None),),
               "paper_options": (dict, type(None)), "table1": bool}


def tiny_config(name):
  """A small valid Config built from the fields the family has (no per-family table)."""
  fields = {f.name for f in dataclasses.fields(families.get_family(name).Config)}
  opts = {"d": D, "n": N}
  opts.update({k: v for k, v in (("k", 2), ("group_sizes", (3, 5)), ("n2", N2), ("k2", 1),
                                 ("aux_k", None)) if k in fields})
  return families.make_config(name, **opts)


@functools.lru_cache(maxsize=None)
def tiny(name, seed=0):
  fam = families.get_family(name)
  cfg = tiny_config(name)
  x = jax.random.normal(jax.random.PRNGKey(seed + 1), (B, D))
  params = fam.init(jax.random.PRNGKey(seed), cfg, x)
  # init leaves many biases at zero; random biases make the checks below discriminating
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed + 2), len(leaves))
  params = jax.tree_util.tree_unflatten(
      tree, [v + 0.1 * jax.random.normal(k, v.shape) for v, k in zip(leaves, keys)])
  return fam, cfg, params, fam.init_state(cfg), x


def _leaves(tree):
  return jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda v: v is None or isinstance(v, base.Latent))[0]


def test_both_registries_have_the_same_keys_in_the_same_order():
  assert list(torch_families.FAMILIES) == NAMES
  assert len(NAMES) == len(set(NAMES)) >= 8


@pytest.mark.parametrize("name", NAMES)
def test_every_declared_attribute_is_present_with_its_type(name):
  fam = families.get_family(name)
  for fn in CONTRACT:
    assert callable(getattr(fam, fn)), (name, fn)
  assert issubclass(fam.Config, base.BaseConfig)
  spec = fam.SPEC
  assert isinstance(spec, base.FamilySpec)
  assert {f.name for f in dataclasses.fields(spec)} == set(FIELD_TYPES)
  for field, typ in FIELD_TYPES.items():
    value = getattr(spec, field)
    if field == "saelens":
      assert value is None or callable(value)
    else:
      assert isinstance(value, typ), (name, field, value)
  assert spec.name == name and spec.display
  assert spec.selection in base.SELECTIONS and spec.hierarchy in base.HIERARCHIES
  cfg_fields = {f.name for f in dataclasses.fields(fam.Config)}
  assert spec.k_sparse == ("k" in cfg_fields)
  if spec.paper_options is not None:
    assert set(spec.paper_options) <= cfg_fields and spec.hierarchy == "flat"
  if spec.hierarchy == "groups":
    assert "group_sizes" in cfg_fields
  for path, leaf in _leaves(spec.latent_axes):
    assert leaf is None or (isinstance(leaf.axis, int) and leaf.count in cfg_fields), (name, path)
  torch_fam = torch_families.get_family(name)
  for fn in torch_families.CONTRACT:
    assert callable(getattr(torch_fam, fn)), (name, fn)


@pytest.mark.parametrize("name", NAMES)
def test_declared_latent_axes_index_latents(name):
  """Every parameter is declared, and each declared latent axis has the size its count names."""
  fam, cfg, params, _, _ = tiny(name)
  declared = {jax.tree_util.keystr(p): leaf for p, leaf in _leaves(fam.SPEC.latent_axes)}
  shapes = {jax.tree_util.keystr(p): v.shape for p, v in jax.tree_util.tree_flatten_with_path(
      params)[0]}
  assert set(declared) == set(shapes), name
  assert any(leaf is not None for leaf in declared.values())
  for key, leaf in declared.items():
    if leaf is not None:
      assert shapes[key][leaf.axis] == getattr(cfg, leaf.count), (name, key, shapes[key], leaf)
  if fam.SPEC.cascade_level:
    assert params["W_dec"].shape == (cfg.n, cfg.d)   # one dictionary of atoms a level above reads


@pytest.mark.parametrize("name", NAMES)
def test_centred_means_codes_ignore_a_shift_of_x_and_b_dec(name):
  fam, cfg, params, state, x = tiny(name)
  v = jnp.linspace(-2.0, 3.0, D)
  shifted = jax.tree_util.tree_map_with_path(
      lambda p, a: a + v if jax.tree_util.keystr(p).endswith("['b_dec']") and a.shape == (D,)
      else a, params)
  same = np.allclose(fam.encode(shifted, state, x + v, cfg), fam.encode(params, state, x, cfg),
                     atol=1e-5)
  assert same == fam.SPEC.centred, name


@pytest.mark.parametrize("name", NAMES)
def test_selection_kind_matches_the_codes(name):
  fam, cfg, params, state, x = tiny(name)
  codes = np.asarray(fam.encode(params, state, x, cfg))
  dense = np.asarray(fam.dense_activation(params, x, cfg))
  nonzero = (codes != 0).sum(-1)
  selection = fam.SPEC.selection
  assert np.all(codes[codes != 0] > 0) and codes.shape == dense.shape
  if selection == "dense":
    np.testing.assert_allclose(codes, dense, atol=1e-6)
  elif selection == "row_topk":
    assert nonzero.max() <= cfg.k and nonzero.max() > 0
  elif selection == "batch_topk":   # threshold not set yet: B*k over the batch, rows may differ
    assert nonzero.sum() == cfg.k * B and not np.all(nonzero == cfg.k)
  else:                             # jump / gate: a per-latent rule, not a count
    assert 0 < nonzero.sum() < codes.size


@pytest.mark.parametrize("name", NAMES)
def test_saelens_form_has_saelens_layout(name):
  fam, cfg, params, state, _ = tiny(name)
  spec = fam.SPEC
  if spec.saelens is None:
    return
  if "threshold" in state:
    state = dict(state, threshold=jnp.float32(0.1))
  level = spec.saelens(cfg, params, state)
  assert isinstance(level, base.SAELensLevel)
  assert isinstance(level.cfg, dict) and isinstance(level.metadata, dict)
  assert level.tensors["W_enc"].shape == (D, N) and level.tensors["W_dec"].shape == (N, D)
  assert all(t.dtype == np.float32 for t in level.tensors.values())


def test_no_module_outside_the_families_compares_family_names():
  """The facts live in SPEC: `family == "gated"` or `name in ("topk", ...)` would re-state them."""
  import pathlib
  import re
  root = pathlib.Path(__file__).resolve().parents[2]
  quoted = "|".join(re.escape(f'"{n}"') for n in NAMES)
  pattern = re.compile(rf'(==|!=)\s*({quoted})|({quoted})\s*(==|!=)'
                       rf'|\bin\s*[(\[{{][^)\]}}]*({quoted})')
  files = [p for p in (root / "csae_jax").rglob("*.py") if "families" not in p.parts]
  files.append(root / "bridge_torch" / "sae.py")
  hits = [f"{p.relative_to(root)}:{i}: {line.strip()}" for p in files
          for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
  assert not hits, "\n".join(hits)
