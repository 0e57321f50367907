"""JAX -> export -> PyTorch module: same codes and reconstructions (1e-5) for every family/level."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from tests.bridge_torch.steer_helpers import random_cascade, random_flat, raw_batch

from bridge_torch import sae as tsae
from csae_jax import cascade as cascade_lib
from csae_jax import export

S = 3.7
FAMILIES = ["relu", "pannealing", "topk", "batchtopk", "jumprelu", "gated", "matryoshka", "stacked"]


def _folded_reference(model, params, state, x):
  fp, fs = model.fold_scale(params, state, S)
  codes = model.encode(fp, fs, jnp.asarray(x))
  return np.asarray(codes), np.asarray(model.decode(fp, codes)), np.asarray(
      model.dense_activation(fp, jnp.asarray(x)))


@pytest.mark.parametrize("family", FAMILIES)
def test_torch_module_matches_jax(tmp_path, family):
  model, params, state = random_flat(family)
  path = export.export_model(tmp_path / family, model, params, state, input_scale=S)
  mod = tsae.load_export(path).level1
  x = raw_batch()
  codes, recon, dense = _folded_reference(model, params, state, x)
  with torch.no_grad():
    t_codes = mod.encode(torch.as_tensor(x)).numpy()
    t_recon = mod.decode(torch.as_tensor(t_codes)).numpy()
    t_dense = mod.dense_activation(torch.as_tensor(x)).numpy()
  assert (codes > 0).sum() > 0 and (codes == 0).sum() > 0   # a real sparsity pattern is compared
  np.testing.assert_allclose(t_codes, codes, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(t_recon, recon, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(t_dense, dense, rtol=1e-5, atol=1e-5)


def test_batchtopk_without_threshold_uses_batch_topk(tmp_path):
  model, params, state = random_flat("batchtopk")
  state = dict(state, threshold=jnp.asarray(-1.0))
  mod = tsae.load_export(export.export_model(tmp_path / "b", model, params, state)).level1
  x = raw_batch()
  want = np.asarray(model.encode(params, state, jnp.asarray(x)))
  got = mod.encode(torch.as_tensor(x)).numpy()
  assert (got > 0).sum() == model.cfg.k * x.shape[0]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_every_cascade_level_matches(tmp_path):
  model, params, state = random_cascade(n3=6)
  ex = tsae.load_export(export.export_model(tmp_path / "c", model, params, state, input_scale=S))
  assert len(ex.levels) == 3 and ex.d == model.d
  x = raw_batch()
  codes, recon, _ = _folded_reference(model, params, state, x)
  with torch.no_grad():
    np.testing.assert_allclose(ex.level1.encode(torch.as_tensor(x)).numpy(), codes, atol=1e-5,
                               rtol=1e-5)
    np.testing.assert_allclose(ex.level1(torch.as_tensor(x)).numpy(), recon, atol=1e-5, rtol=1e-5)
    for l in (1, 2):
      want = np.asarray(cascade_lib.encode_atoms(params, state, model.cfg, l))
      got = ex.levels[l].encode(ex.levels[l - 1].atoms()).numpy()
      assert (want > 0).any()
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  for got, ref in zip(ex.parents, cascade_lib.parent_maps(params, model.cfg)):
    np.testing.assert_array_equal(got.numpy(), np.asarray(ref))
  unit = int(ex.parents[0][ex.parents[0] >= 0][0])
  np.testing.assert_array_equal(ex.children(unit), np.flatnonzero(np.asarray(
      cascade_lib.parent_maps(params, model.cfg)[0]) == unit))


def test_wrong_width_is_refused(tmp_path):
  model, params, state = random_flat("relu")
  mod = tsae.load_export(export.export_model(tmp_path / "r", model, params, state)).level1
  with pytest.raises(ValueError, match="dimension 5 but the SAE expects d=12"):
    mod.encode(torch.zeros(3, 5))


def test_a_vq_level_two_matches(tmp_path):
  """The planted configs' default Level 2 (vq: nearest centre, no encoder) through the export:
  the PyTorch level gives the JAX level's codes on the Level-1 atoms, and the same parents."""
  import jax
  from csae_jax import models
  model = models.build_model(dict(name="cascade", d=16, levels=[
      dict(family="batchtopk", n=24, k=3, aux_k=None), dict(family="vq", n=4)]))
  params, state = model.init(jax.random.PRNGKey(0), jnp.asarray(raw_batch(d=16)))
  rng = np.random.default_rng(3)
  params = (params[0], dict(params[1], W_dec=jnp.asarray(rng.normal(size=(4, 16)), jnp.float32),
                            b_dec=jnp.asarray(0.1 * rng.normal(size=16), jnp.float32)))
  ex = tsae.load_export(export.export_model(tmp_path / "vq", model, params, state, input_scale=S))
  want = np.asarray(cascade_lib.encode_atoms(params, state, model.cfg, 1))
  with torch.no_grad():
    got = ex.levels[1].encode(ex.levels[0].atoms()).numpy()
  assert want.any() and (want > 0).sum(1).max() == 1     # one-hot nearest-centre codes
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(ex.parents[0].numpy(),
                                np.asarray(cascade_lib.parent_maps(params, model.cfg)[0]))
