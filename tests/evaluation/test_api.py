"""csae_jax.api.load: the notebook view of an experiment or a trainer run."""
import os

import numpy as np
import pytest

from csae_jax import api
from csae_jax.evaluation.evaluator import Evaluation


def test_load_experiment_method(experiment):
  wd = experiment["workdir"]
  h = api.load(wd)
  ev = Evaluation.load(os.path.join(wd, "results", "csae"))
  assert h.method == "csae" and h.num_levels == 2
  np.testing.assert_array_equal(h.parent_maps[0], ev.parents[0])
  np.testing.assert_array_equal(h.hms(), ev.hms[0])
  assert h.hms_summary()["mean"] == pytest.approx(ev.summary["hms"]["mean"])
  for u in range(len(ev.hms[0])):
    kids = h.children(u)
    assert len(kids) == ev.child_counts[0][u]
    assert all(h.parent(k) == u for k in kids)
  best = h.top_units(3)
  assert np.all(np.diff(h.hms()[best]) <= 0)
  tree = h.tree()
  assert sum(len(n["children"]) for n in tree) == int((ev.parents[0] >= 0).sum())
  # Top images of a Level-1 unit are its highest image-level codes, best first.
  unit = int(np.argmax(ev.top_values[:, 0]))
  imgs = h.top_images(unit, k=3)
  assert imgs[0]["image"] == int(ev.top_images[unit, 0])
  assert imgs[0]["image_id"] == h.source.image_ids[imgs[0]["image"]]
  assert [i["value"] for i in imgs] == sorted([i["value"] for i in imgs], reverse=True)
  # Params are folded for raw activations: encoding store tokens gives codes of the right width.
  x = h.source.read_tokens(0, 5)
  assert h.encode(x).shape == (5, experiment["config"].n1)
  assert repr(h).startswith("Hierarchy('csae'")
  with pytest.raises(FileNotFoundError, match="no evaluated method 'relu'"):
    api.load(wd, "relu")
  flat = api.load(wd, "batchtopk")
  assert flat.hms_summary()["count"] == flat.evaluation.summary["hms"]["count"]


def test_load_trainer_run_with_and_without_store(experiment):
  wd = experiment["workdir"]
  run_dir = os.path.join(wd, "runs", "csae_full")
  h = api.load(run_dir)
  assert h.evaluation is None and len(h.parent_maps) == 1
  with pytest.raises(ValueError, match="eval_store"):
    h.hms()
  h2 = api.load(run_dir, eval_store=os.path.join(wd, "data", "eval"))
  assert np.isfinite(h2.hms_summary()["mean"]) or h2.hms_summary()["count"] == 0
  assert os.path.exists(os.path.join(run_dir, "evaluation", "summary.json"))
  flat = api.load(os.path.join(wd, "runs", "batchtopk_l1"), eval_store=os.path.join(wd, "data", "eval"))
  assert flat.evaluation.summary["options"]["posthoc"] == "hac"


def test_hierarchy_writes_its_dashboard(experiment, tmp_path):
  import json
  h = api.load(experiment["workdir"], "csae")
  path = h.dashboard(str(tmp_path / "csae.html"), max_parents=2)
  text = open(path).read()
  data = json.loads(text.split('<script id="data" type="application/json">')[1]
                    .split("</script>")[0])
  assert data["title"] == "CSAE concept dashboard" and len(data["units"]) == 2
  assert data["has_stats"] and data["units"][0]["ev"]


def test_load_an_export_directory(experiment, tmp_path):
  """csae_jax.load accepts a native export: same parameters, parents and HMS as the run it came
  from, and the export directory is left untouched."""
  import inspect

  import csae_jax
  from csae_jax import export
  wd = experiment["workdir"]
  run_dir = os.path.join(wd, "runs", "csae_full")
  out = export.export_run(run_dir, tmp_path / "exp")
  before = sorted(os.listdir(out))
  eval_store = os.path.join(wd, "data", "eval")
  h = csae_jax.load(out, eval_store=eval_store)
  from_run = api.load(run_dir, eval_store=eval_store)
  assert h.method == "csae" and h.num_levels == 2 and sorted(os.listdir(out)) == before
  np.testing.assert_array_equal(h.parent_maps[0], from_run.parent_maps[0])
  np.testing.assert_allclose(h.hms(), from_run.hms(), rtol=1e-5, atol=1e-6, equal_nan=True)
  x = h.source.read_tokens(0, 7)
  np.testing.assert_allclose(h.encode(x), from_run.encode(x), rtol=1e-5, atol=1e-6)
  bare = csae_jax.load(out)
  np.testing.assert_array_equal(bare.parent_maps[0], export.load_export(out).parents[0])
  with pytest.raises(ValueError, match="step does not apply"):
    csae_jax.load(out, step=3)
  params = inspect.signature(csae_jax.load).parameters
  assert list(params) == ["path", "method", "eval_store", "step"]
  assert "export" in csae_jax.load.__doc__
