"""Row 12 and rows 4 / 15 of issue 10 for exports: a malformed export config or safetensors file
raises ExportError naming the field; --overwrite never deletes an unrelated directory; files and
directories get the umask's usual modes."""
from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from csae_jax import export
from tests.bridge_torch.steer_helpers import random_cascade, random_flat


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
  root = tmp_path_factory.mktemp("exports")
  model, params, state = random_flat("topk")
  flat = export.export_model(root / "flat", model, params, state, input_scale=2.0)
  model, params, state = random_cascade()
  casc = export.export_model(root / "casc", model, params, state, input_scale=2.0)
  return flat, casc


def _edited(src, dst, edit):
  dst.mkdir()
  cfg = json.loads((src / export.CONFIG_FILE).read_text())
  edit(cfg)
  (dst / export.CONFIG_FILE).write_text(json.dumps(cfg))
  (dst / export.WEIGHTS_FILE).write_bytes((src / export.WEIGHTS_FILE).read_bytes())
  return dst


def _set(path, value):
  def edit(cfg):
    *parents, last = path
    node = cfg
    for p in parents:
      node = node[p]
    if value is KeyError:
      del node[last]
    else:
      node[last] = value
  return edit


FLAT_CASES = [
    ("no_levels", ("levels",), KeyError, "missing field 'levels'"),
    ("levels_string", ("levels",), "abc", "field 'levels' must be a non-empty list"),
    ("k_negative", ("levels", 0, "config", "k"), -1, r"field 'levels\[0\]\.config\.k'"),
    ("k_above_n", ("levels", 0, "config", "k"), 10_000, r"field 'levels\[0\]\.config\.k'"),
    ("n_string", ("levels", 0, "config", "n"), "8", r"field 'levels\[0\]\.config\.n'"),
    ("unknown_key", ("extra_field",), 1, r"unknown field\(s\) \['extra_field'\]"),
    ("d_zero", ("d",), 0, "field 'd' must be a positive integer"),
    ("kind_bad", ("kind",), "tree", "field 'kind' must be"),
    ("kind_cascade_on_flat", ("kind",), "cascade", "needs at least 2 levels"),
]


@pytest.mark.parametrize("name,path,value,message", FLAT_CASES, ids=[c[0] for c in FLAT_CASES])
def test_flat_config_errors_name_the_field(exports, tmp_path, name, path, value, message):
  bad = _edited(exports[0], tmp_path / name, _set(path, value))
  with pytest.raises(export.ExportError, match=message):
    export.read_export_files(bad)


def test_kind_flat_on_a_cascade(exports, tmp_path):
  bad = _edited(exports[1], tmp_path / "x", _set(("kind",), "flat"))
  with pytest.raises(export.ExportError, match="needs exactly 1 level"):
    export.read_export_files(bad)


def test_parent_index_out_of_range(exports, tmp_path):
  from safetensors.numpy import load_file, save_file
  src = exports[1]
  dst = tmp_path / "parents"
  dst.mkdir()
  tensors = load_file(str(src / export.WEIGHTS_FILE))
  n2 = tensors["level2.W_enc"].shape[1]
  tensors["parents.level2"] = tensors["parents.level2"].copy()
  tensors["parents.level2"][0] = n2      # one past the last Level-2 latent
  save_file(tensors, str(dst / export.WEIGHTS_FILE))
  cfg = json.loads((src / export.CONFIG_FILE).read_text())
  cfg["weights_sha256"] = export._sha256(dst / export.WEIGHTS_FILE)
  (dst / export.CONFIG_FILE).write_text(json.dumps(cfg))
  with pytest.raises(export.ExportError, match="parents.level2 holds parent indices outside"):
    export.read_export_files(dst)


def _rewritten(src, dst, edit_tensors):
  from safetensors.numpy import load_file, save_file
  dst.mkdir()
  tensors = load_file(str(src / export.WEIGHTS_FILE))
  edit_tensors(tensors)
  save_file(tensors, str(dst / export.WEIGHTS_FILE))
  cfg = json.loads((src / export.CONFIG_FILE).read_text())
  cfg["weights_sha256"] = export._sha256(dst / export.WEIGHTS_FILE)
  (dst / export.CONFIG_FILE).write_text(json.dumps(cfg))
  return dst


def test_a_missing_family_tensor_is_named(exports, tmp_path):
  """W_enc may be absent at the NumPy check (a vq level has none), so load_export checks the
  whole tree against the family: a TopK level without W_enc (or with a stray tensor) is refused."""
  bad = _rewritten(exports[0], tmp_path / "no_enc", lambda t: t.pop("level1.W_enc"))
  export.read_export_files(bad)
  with pytest.raises(export.ExportError, match=r"missing \['W_enc'\], unexpected \[\]"):
    export.load_export(bad)
  bad = _rewritten(exports[0], tmp_path / "stray", lambda t: t.update(
      {"level1.W_extra": np.zeros(3, np.float32)}))
  with pytest.raises(export.ExportError, match=r"unexpected \['W_extra'\]"):
    export.load_export(bad)


def test_a_vq_level_exports_and_loads_without_an_encoder(tmp_path):
  import jax
  import jax.numpy as jnp
  from csae_jax import models
  model = models.build_model(dict(name="cascade", d=6, levels=[
      dict(family="topk", n=10, k=2, aux_k=None), dict(family="vq", n=3)]))
  params, state = model.init(jax.random.PRNGKey(0), jnp.ones((4, 6)))
  out = export.export_model(tmp_path / "vq", model, params, state)
  loaded = export.load_export(out)
  assert set(loaded.params[1]) == {"W_dec", "b_dec"}
  np.testing.assert_array_equal(np.asarray(loaded.params[1]["W_dec"]),
                                np.asarray(params[1]["W_dec"]))


def test_malformed_safetensors_header(exports, tmp_path):
  dst = tmp_path / "header"
  dst.mkdir()
  raw = bytearray((exports[0] / export.WEIGHTS_FILE).read_bytes())
  header_len = int.from_bytes(raw[:8], "little")
  raw[8:8 + header_len] = b"{" * header_len           # same length, not JSON
  (dst / export.WEIGHTS_FILE).write_bytes(bytes(raw))
  cfg = json.loads((exports[0] / export.CONFIG_FILE).read_text())
  cfg["weights_sha256"] = export._sha256(dst / export.WEIGHTS_FILE)   # the checksum agrees
  (dst / export.CONFIG_FILE).write_text(json.dumps(cfg))
  with pytest.raises(export.ExportError, match="not a readable safetensors file"):
    export.read_export_files(dst)


def test_overwrite_refuses_an_unrelated_directory(tmp_path):
  model, params, state = random_flat("relu")
  victim = tmp_path / "mydata"
  victim.mkdir()
  (victim / "thesis.tex").write_text("precious")
  for fn in (export.export_model, export.export_saelens):
    with pytest.raises(FileExistsError, match="does not hold a csae_jax or SAELens export"):
      fn(victim, model, params, state, overwrite=True)
  assert (victim / "thesis.tex").read_text() == "precious"
  empty = tmp_path / "empty"
  empty.mkdir()
  export.export_model(empty, model, params, state, overwrite=True)   # empty: fine
  export.export_model(empty, model, params, state, overwrite=True)   # an export: replaced
  assert sorted(os.listdir(empty)) == [export.CONFIG_FILE, export.WEIGHTS_FILE]
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp litter


def test_export_modes_follow_the_umask(tmp_path):
  model, params, state = random_flat("relu")
  old = os.umask(0o022)
  try:
    out = export.export_model(tmp_path / "e", model, params, state)
  finally:
    os.umask(old)
  assert stat.S_IMODE(os.stat(out).st_mode) == 0o755
  for name in (export.CONFIG_FILE, export.WEIGHTS_FILE):
    assert stat.S_IMODE(os.stat(out / name).st_mode) == 0o644
  np.testing.assert_equal(export.load_export(out).params["W_enc"].shape[0], model.d)
