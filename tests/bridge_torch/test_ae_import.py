"""Import of an ae.pt built with the authors' key names (TwoLevelBatchTopKSAE state dict)."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from bridge_torch import ae_import
from bridge_torch import sae as tsae
from csae_jax import cascade as cascade_lib

D, N1, N2, S = 10, 30, 6, 2.5


def _authors_level(rng, n, threshold):
  dec = torch.as_tensor(rng.normal(size=(D, n)), dtype=torch.float32)
  dec = dec / dec.norm(dim=0, keepdim=True)                          # columns are atoms
  return {"encoder.weight": (dec.T + 0.2 * torch.as_tensor(rng.normal(size=(n, D)),
                                                            dtype=torch.float32)).contiguous(),
          "encoder.bias": torch.as_tensor(0.1 * rng.normal(size=n), dtype=torch.float32),
          "decoder.weight": dec.contiguous(),
          "b_dec": torch.as_tensor(0.1 * rng.normal(size=D), dtype=torch.float32),
          "k": torch.tensor(4.0), "threshold": torch.tensor(threshold)}


def _authors_encode(lv, x):
  """BatchTopKSAE.encode(use_threshold=True) of the release."""
  post = torch.relu((x - lv["b_dec"]) @ lv["encoder.weight"].T + lv["encoder.bias"])
  return post * (post > lv["threshold"])


@pytest.fixture()
def ae_pt(tmp_path):
  rng = np.random.default_rng(0)
  lv1, lv2 = _authors_level(rng, N1, 0.3), _authors_level(rng, N2, 0.05)
  saved = {}
  for name, lv in (("sae1", lv1), ("sae2", lv2)):
    for k, v in lv.items():
      v = v.clone()
      if k in ("encoder.bias", "b_dec", "threshold"):
        v = v * S                                   # their scale_biases(s) on BOTH levels
      saved[f"{name}.{k}"] = v
  saved["live_mask1"] = torch.as_tensor(rng.random(N1) > 0.3)
  saved["live_mask2"] = torch.zeros(N2, dtype=torch.bool)
  saved["live_n1"] = saved["live_mask1"].sum().int()
  saved["live_n2"] = torch.tensor(0, dtype=torch.int)
  path = tmp_path / "ae.pt"
  torch.save(saved, path)
  scaled_lv1 = {k: saved["sae1." + k] for k in lv1}
  return path, scaled_lv1, lv2


def test_import_matches_authors_encoding(ae_pt, tmp_path):
  path, lv1_raw, lv2_unscaled = ae_pt
  model, params, state, live = ae_import.import_ae_pt(path, input_scale=S)
  assert model.is_cascade and model.cfg.levels[0].cfg.n == N1 and model.cfg.levels[1].cfg.k == 4
  assert int(live["live_n1"]) == int(live["live_mask1"].sum())
  x = torch.as_tensor(np.random.default_rng(1).normal(size=(16, D)) * S, dtype=torch.float32)
  want1 = _authors_encode(lv1_raw, x).numpy()
  got1 = np.asarray(model.encode(params, state, jnp.asarray(x.numpy())))
  assert (want1 > 0).any()
  np.testing.assert_allclose(got1, want1, rtol=1e-5, atol=1e-5)
  # Level 2 reads unit atoms: after the import its biases are the unscaled ones again
  atoms = lv1_raw["decoder.weight"].T
  want2 = _authors_encode(lv2_unscaled, atoms).numpy()
  got2 = np.asarray(cascade_lib.encode_atoms(params, state, model.cfg, 1))
  assert (want2 > 0).any()
  np.testing.assert_allclose(got2, want2, rtol=1e-5, atol=1e-5)
  # and the native export of the import gives the same through the PyTorch module
  ex = tsae.load_export(ae_import.import_ae_pt_to_export(path, tmp_path / "exp", input_scale=S))
  with torch.no_grad():
    np.testing.assert_allclose(ex.level1.encode(x).numpy(), want1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ex.levels[1].encode(ex.level1.atoms()).numpy(), want2, rtol=1e-5,
                               atol=1e-5)


def test_scale_must_be_stated(ae_pt):
  path, _, _ = ae_pt
  with pytest.raises(ae_import.CheckpointError, match="input_scale"):
    ae_import.import_ae_pt(path)
  model, params, state, _ = ae_import.import_ae_pt(path, level2_biases_scaled=False)
  assert float(state[1]["threshold"]) == pytest.approx(0.05 * S)


class NotATensor:
  pass


def test_pickled_objects_refused(tmp_path):
  path = tmp_path / "evil.pt"
  torch.save({"sae1.k": torch.tensor(1.0), "extra": NotATensor()}, path)
  with pytest.raises(ae_import.CheckpointError, match="pickled Python objects"):
    ae_import.import_ae_pt(path, input_scale=1.0)


def test_missing_and_misshaped_keys(tmp_path, ae_pt):
  path, _, _ = ae_pt
  sd = torch.load(path, weights_only=True)
  del sd["sae2.threshold"]
  torch.save(sd, tmp_path / "missing.pt")
  with pytest.raises(ae_import.CheckpointError, match="sae2.threshold"):
    ae_import.import_ae_pt(tmp_path / "missing.pt", input_scale=S)
  sd = torch.load(path, weights_only=True)
  sd["sae1.b_dec"] = torch.zeros(D + 1)
  torch.save(sd, tmp_path / "shape.pt")
  with pytest.raises(ae_import.CheckpointError, match="sae1.b_dec has shape"):
    ae_import.import_ae_pt(tmp_path / "shape.pt", input_scale=S)


def test_release_faithful_keeps_level2_as_saved(ae_pt, tmp_path):
  """The release's evaluation loads ae.pt unscaled: Level 2 then encodes atoms with biases and
  threshold times s (hand reference: the authors' encode on the saved tensors)."""
  path, lv1_raw, lv2_unscaled = ae_pt
  model, params, state, _ = ae_import.import_ae_pt(path, release_faithful=True)  # no s needed
  saved2 = {k: (v * S if k in ("encoder.bias", "b_dec", "threshold") else v)
            for k, v in lv2_unscaled.items()}
  atoms = lv1_raw["decoder.weight"].T
  want = _authors_encode(saved2, atoms).numpy()
  got = np.asarray(cascade_lib.encode_atoms(params, state, model.cfg, 1))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert not np.allclose(got, _authors_encode(lv2_unscaled, atoms).numpy(), atol=1e-3)
  np.testing.assert_allclose(float(state[1]["threshold"]), 0.05 * S, rtol=1e-6)
  out = ae_import.import_ae_pt_to_export(path, tmp_path / "rf", release_faithful=True)
  ex = tsae.load_export(out)
  with torch.no_grad():
    np.testing.assert_allclose(ex.levels[1].encode(ex.level1.atoms()).numpy(), want, rtol=1e-5,
                               atol=1e-5)
