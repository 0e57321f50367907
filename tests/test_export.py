"""Native and SAELens-format export (csae_jax/export.py): round trip, folding, names, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from csae_jax import cascade as cascade_lib
from csae_jax import export
from tests.bridge_torch.steer_helpers import random_cascade, random_flat, raw_batch

S = 3.7
SAELENS_FAMILIES = ["relu", "pannealing", "topk", "batchtopk", "jumprelu", "gated", "matryoshka"]


def test_native_round_trip_folds_scale(tmp_path):
  """load_export(export(params)) encodes raw x as the trained model encodes x / s, times s."""
  for family in ["relu", "topk", "batchtopk", "jumprelu", "gated", "matryoshka", "stacked"]:
    model, params, state = random_flat(family)
    out = export.export_model(tmp_path / family, model, params, state, input_scale=S,
                              hooked_module="model.visual.blocks.23")
    ex = export.load_export(out)
    x = raw_batch()
    codes_raw = np.asarray(ex.model.encode(ex.params, ex.state, jnp.asarray(x)))
    codes_scaled = np.asarray(model.encode(params, state, jnp.asarray(x / S)))
    np.testing.assert_allclose(codes_raw, S * codes_scaled, rtol=1e-5, atol=1e-5, err_msg=family)
    recon_raw = np.asarray(ex.model.decode(ex.params, jnp.asarray(codes_raw)))
    recon_scaled = np.asarray(model.decode(params, jnp.asarray(codes_scaled)))
    np.testing.assert_allclose(recon_raw, S * recon_scaled, rtol=1e-5, atol=1e-5, err_msg=family)
    assert ex.config["input_scale_folded"] == S
    assert ex.config["hooked_module"] == "model.visual.blocks.23"


def test_cascade_export_keeps_upper_levels_unscaled(tmp_path):
  model, params, state = random_cascade(n3=6)
  ex = export.load_export(export.export_model(tmp_path / "c", model, params, state, input_scale=S))
  for l in (1, 2):
    for k in params[l]:
      np.testing.assert_array_equal(np.asarray(ex.params[l][k]), np.asarray(params[l][k]))
  np.testing.assert_allclose(np.asarray(ex.params[0]["b_dec"]), S * np.asarray(params[0]["b_dec"]),
                             rtol=1e-6)
  assert float(ex.state[0]["threshold"]) == pytest.approx(S * float(state[0]["threshold"]))
  assert float(ex.state[1]["threshold"]) == pytest.approx(float(state[1]["threshold"]))
  want = cascade_lib.parent_maps(params, model.cfg)
  assert len(ex.parents) == 2
  for got, ref in zip(ex.parents, want):
    np.testing.assert_array_equal(got, np.asarray(ref))


def test_single_level_export(tmp_path):
  model, params, state = random_cascade()
  ex2 = export.load_export(export.export_model(tmp_path / "l2", model, params, state,
                                               input_scale=S, level=2))
  assert ex2.model.name == "batchtopk" and ex2.config["input_scale_folded"] == 1.0
  np.testing.assert_array_equal(np.asarray(ex2.params["b_dec"]), np.asarray(params[1]["b_dec"]))
  with pytest.raises(ValueError, match="level must be in 1..2"):
    export.export_model(tmp_path / "l3", model, params, state, level=3)


def test_refuses_overwrite_and_detects_corruption(tmp_path):
  model, params, state = random_flat("relu")
  out = export.export_model(tmp_path / "e", model, params, state)
  with pytest.raises(FileExistsError, match="overwrite"):
    export.export_model(out, model, params, state)
  export.export_model(out, model, params, state, input_scale=2.0, overwrite=True)
  assert export.read_export_files(out)[0]["input_scale_folded"] == 2.0
  with open(out / export.WEIGHTS_FILE, "r+b") as f:
    f.seek(-8, 2)
    f.write(b"\x00\x01\x02\x03\x04\x05\x06\x07")
  with pytest.raises(export.ExportError, match="checksum"):
    export.read_export_files(out)
  with pytest.raises(ValueError, match="input_scale"):
    export.export_model(tmp_path / "bad", model, params, state, input_scale=float("nan"))
  bad = dict(params, b_dec=params["b_dec"].at[0].set(jnp.nan))
  with pytest.raises(export.ExportError, match="NaN"):
    export.export_model(tmp_path / "nan", model, bad, state)
  assert not (tmp_path / "nan").exists()


# ----------------------------------------------------------------------------- SAELens
def saelens_encode_reference(cfg: dict, w: dict, x: np.ndarray) -> np.ndarray:
  """SAELens's inference encode per architecture, in float64 (read from its source)."""
  w = {k: v.astype(np.float64) for k, v in w.items()}
  x = x.astype(np.float64)
  sae_in = x - w["b_dec"] * cfg["apply_b_dec_to_input"]
  arch = cfg["architecture"]
  if arch == "gated":
    gate = (sae_in @ w["W_enc"] + w["b_gate"]) > 0
    mag = sae_in @ (w["W_enc"] * np.exp(w["r_mag"])) + w["b_mag"]
    return gate * np.maximum(mag, 0)
  pre = sae_in @ w["W_enc"] + w["b_enc"]
  if arch == "standard":
    return np.maximum(pre, 0)
  if arch == "topk":
    idx = np.argsort(-pre, axis=-1)[:, :cfg["k"]]
    out = np.zeros_like(pre)
    np.put_along_axis(out, idx, np.maximum(np.take_along_axis(pre, idx, -1), 0), -1)
    return out
  if arch == "jumprelu":
    return np.maximum(pre, 0) * (pre > np.maximum(w["threshold"], 0))
  raise AssertionError(arch)


@pytest.mark.parametrize("family", SAELENS_FAMILIES)
def test_saelens_format_names_shapes_and_codes(tmp_path, family):
  from safetensors.numpy import load_file
  model, params, state = random_flat(family)
  out = export.export_saelens(tmp_path / family, model, params, state, input_scale=S,
                              hook_name="model.visual.blocks.23", model_name="Qwen3-VL-4B")
  cfg = json.loads((out / "cfg.json").read_text())
  w = load_file(str(out / "sae_weights.safetensors"))
  d, n = model.d, model.n
  assert cfg["d_in"] == d and cfg["d_sae"] == n
  assert cfg["architecture"] == export.SAELENS_ARCHITECTURE[family]
  # SAELens reads a cfg.json without a version as pre-6.0 and fails on a null hook_name
  # (found by tools/saelens_interop.py against sae-lens 6.54).
  assert cfg["metadata"]["sae_lens_version"] == "6.0.0"
  assert all(v is not None for k, v in cfg.items() if k in ("hook_name", "model_name"))
  assert cfg["normalize_activations"] == "none" and cfg["dtype"] == "float32"
  assert cfg["metadata"]["hook_name"] == "model.visual.blocks.23"
  expected = {"W_enc": (d, n), "W_dec": (n, d), "b_dec": (d,)}
  expected.update({"b_gate": (n,), "r_mag": (n,), "b_mag": (n,)} if family == "gated"
                  else {"b_enc": (n,)})
  if cfg["architecture"] == "jumprelu":
    expected["threshold"] = (n,)
  assert {k: v.shape for k, v in w.items()} == expected
  assert all(v.dtype == np.float32 for v in w.values())
  x = raw_batch()
  ref = saelens_encode_reference(cfg, w, x)
  ex = export.load_export(export.export_model(tmp_path / ("n" + family), model, params, state,
                                              input_scale=S))
  ours = np.asarray(ex.model.encode(ex.params, ex.state, jnp.asarray(x)))
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
  recon = ref @ w["W_dec"].astype(np.float64) + w["b_dec"]
  np.testing.assert_allclose(np.asarray(ex.model.decode(ex.params, jnp.asarray(ours))), recon,
                             rtol=1e-4, atol=1e-4)


def test_saelens_cascade_levels_and_refusals(tmp_path):
  model, params, state = random_cascade()
  with pytest.raises(ValueError, match="level must be in 1..2"):
    export.export_saelens(tmp_path / "x", model, params, state, level=3)
  out = export.export_saelens(tmp_path / "l2", model, params, state, input_scale=S, level=2)
  cfg = json.loads((out / "cfg.json").read_text())
  assert cfg["metadata"]["cascade_level"] == 2 and cfg["metadata"]["input_scale_folded"] == 1.0
  m, p, s = random_flat("stacked")
  with pytest.raises(export.ExportError, match="no SAELens architecture"):
    export.export_saelens(tmp_path / "st", m, p, s)
  m, p, s = random_flat("batchtopk")
  s = dict(s, threshold=jnp.asarray(-1.0))
  with pytest.raises(export.ExportError, match="threshold was never set"):
    export.export_saelens(tmp_path / "bt", m, p, s)



def test_saelens_cascade_defaults_to_level1_and_carries_the_hierarchy(tmp_path):
  """Without a level a cascade exports Level 1 (the level that reads activations) with the
  parent maps in a sidecar JSON equal to the native export's parents tensors."""
  from safetensors.numpy import load_file
  model, params, state = random_cascade()
  out = export.export_saelens(tmp_path / "sl", model, params, state, input_scale=S,
                              hook_name="model.visual.blocks.23", model_name="Qwen3-VL-4B")
  cfg = json.loads((out / "cfg.json").read_text())
  assert cfg["metadata"]["cascade_level"] == 1 and cfg["d_sae"] == model.cfg.levels[0].cfg.n
  assert cfg["metadata"]["input_scale_folded"] == S
  native = export.load_export(export.export_model(tmp_path / "nat", model, params, state,
                                                  input_scale=S))
  side = json.loads((out / export.HIERARCHY_FILE).read_text())
  assert side["format"] == export.HIERARCHY_FORMAT and side["num_levels"] == 2
  np.testing.assert_array_equal(np.asarray(side["parents"]["level2"]), native.parents[0])
  assert len(side["parents"]["level2"]) == model.cfg.levels[0].cfg.n
  # the SAELens weights encode like the native export's Level 1
  w = load_file(str(out / "sae_weights.safetensors"))
  x = raw_batch()
  from csae_jax.models import Model
  lv1 = native.model.cfg.levels[0]
  ours = np.asarray(Model(lv1.family, lv1.cfg).encode(native.params[0], native.state[0],
                                                      jnp.asarray(x)))
  np.testing.assert_allclose(saelens_encode_reference(cfg, w, x), ours, rtol=1e-5, atol=1e-5)


def test_convert_an_existing_export_to_saelens(tmp_path):
  """`python -m csae_jax.export --from_export=... --saelens` writes the same files as exporting
  the model directly: weights, cfg (hook, model name, folded scale) and hierarchy."""
  from safetensors.numpy import load_file
  model, params, state = random_cascade()
  nat = export.export_model(tmp_path / "nat", model, params, state, input_scale=S,
                            hooked_module="model.visual.blocks.23", source_model="tiny-qwen")
  export.convert_to_saelens(nat, tmp_path / "conv")
  direct = export.export_saelens(tmp_path / "direct", model, params, state, input_scale=S,
                                 hook_name="model.visual.blocks.23", model_name="tiny-qwen")
  conv = tmp_path / "conv"
  a, b = load_file(str(conv / "sae_weights.safetensors")), load_file(
      str(direct / "sae_weights.safetensors"))
  assert set(a) == set(b)
  for k in a:
    np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-7)
  ca, cb = (json.loads((p / "cfg.json").read_text()) for p in (conv, direct))
  assert ca == cb and ca["model_name"] == "tiny-qwen" and ca["hook_name"] == "model.visual.blocks.23"
  assert json.loads((conv / export.HIERARCHY_FILE).read_text()) == json.loads(
      (direct / export.HIERARCHY_FILE).read_text())
  with pytest.raises(FileExistsError):
    export.convert_to_saelens(nat, conv)
  # the command line: python -m csae_jax.export --from_export=... [--saelens]
  import os
  import subprocess
  import sys
  env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), JAX_PLATFORMS="cpu")
  cmd = [sys.executable, "-m", "csae_jax.export", f"--from_export={nat}"]
  bad = subprocess.run(cmd + [f"--out={tmp_path / 'x'}"], capture_output=True, text=True, env=env,
                       timeout=120)
  assert bad.returncode != 0 and "add --saelens" in bad.stderr and not (tmp_path / "x").exists()
  ok = subprocess.run(cmd + [f"--out={tmp_path / 'cli'}", "--saelens"], capture_output=True,
                      text=True, env=env, timeout=120)
  assert ok.returncode == 0, ok.stderr[-2000:]
  assert json.loads((tmp_path / "cli" / "cfg.json").read_text()) == ca


def test_model_name_and_hook_come_from_the_training_store(tmp_path):
  import ml_collections
  (tmp_path / "manifest.json").write_text(json.dumps({"model": "tiny-qwen",
                                                      "hooked_module": "model.visual.blocks.1"}))
  cfg = ml_collections.ConfigDict({"data": {"kind": "store", "path": str(tmp_path)}})
  assert export.store_manifest_of_run(cfg)["model"] == "tiny-qwen"
  assert export.hooked_module_of_run(cfg) == "model.visual.blocks.1"
  planted = ml_collections.ConfigDict({"data": {"kind": "planted", "path": ""}})
  assert export.store_manifest_of_run(planted) == {}
