"""The experiment runner: tables, plots, resumability, config errors (tiny planted experiment)."""
import csv
import os

import numpy as np
import pytest

from csae_jax.evaluation import experiments
from csae_jax.evaluation.evaluator import Evaluation


def test_tables_and_plots_written(experiment):
  wd = experiment["workdir"]
  for name in ("table1_2", "hms_full", "table4", "reconstruction", "recovery"):
    for ext in ("md", "csv"):
      assert os.path.getsize(os.path.join(wd, "tables", f"{name}.{ext}")) > 0
  with open(os.path.join(wd, "tables", "table1_2.csv")) as f:
    rows = list(csv.DictReader(f))
  assert [r["Method"] for r in rows] == ["BatchTopK", "CSAE"]
  summaries = experiment["out"]["summaries"]
  for r, m in zip(rows, ("batchtopk", "csae")):
    assert float(r["HMS mean"]) == pytest.approx(summaries[m]["hms"]["mean"], abs=1e-6)
  with open(os.path.join(wd, "tables", "table4.md")) as f:
    head = f.read()
  assert "HAC" in head and "CSAE (Full)" in head
  for png in ("hms_distribution.png", "children_per_parent.png"):
    with open(os.path.join(wd, "plots", png), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_table_values_recomputed_from_saved_arrays(experiment):
  """The table's HMS mean is the mean of the saved per-parent HMS of parents with >= 2 children."""
  ev = Evaluation.load(os.path.join(experiment["workdir"], "results", "csae"))
  h = ev.hms[0]
  counts = ev.child_counts[0]
  assert np.array_equal(np.isfinite(h), counts >= 2)
  assert np.nanmean(h) == pytest.approx(ev.summary["hms"]["mean"])
  assert {"parent_purity", "parent_ari", "mean_best_child_cos"} <= set(ev.summary["recovery"])


def test_rerun_reuses_runs_and_results(experiment):
  wd = experiment["workdir"]
  stamp = {p: os.path.getmtime(p) for p in
           [os.path.join(wd, "runs", r, "run.json") for r in ("csae_full", "batchtopk_l1")]
           + [os.path.join(wd, "results", m, "arrays.npz") for m in ("csae", "hac")]}
  out = experiments.run_experiment(experiment["config"], wd)
  for p, t in stamp.items():
    assert os.path.getmtime(p) == t, f"{p} was redone"
  assert out["summaries"]["csae"]["hms"] == experiment["out"]["summaries"]["csae"]["hms"]


def test_changed_experiment_config_refuses_to_mix(experiment):
  c = experiment["config"].copy_and_resolve_references()
  c.n1 = 20
  with pytest.raises(ValueError, match="different config"):
    experiments.run_experiment(c, experiment["workdir"])


@pytest.mark.parametrize("key,value,match", [
    ("methods", ("batchtopk", "nope"), "unknown method 'nope'"),
    ("methods", ("batchtopk,nope",), "unknown method 'nope'"),   # what csae,nope parses to
    ("ablations", ("hac", "bogus"), "unknown ablation 'bogus'"),
    ("k1", 99, "exceed"),
    ("posthoc_source", "kmeans", "posthoc_source"),
])
def test_config_errors_name_the_key(key, value, match):
  from tests.evaluation.tiny import tiny_experiment_config
  c = tiny_experiment_config()
  c[key] = value
  with pytest.raises(ValueError, match=match):
    experiments.validate(c)


def test_run_models_cover_every_method():
  from tests.evaluation.tiny import tiny_experiment_config
  c = tiny_experiment_config()
  c.methods = tuple(experiments.TABLE_METHODS)
  c.ablations = tuple(experiments.ABLATIONS)
  models = experiments.run_models(c, 16)
  want = {f"{f}_l{l}" for f in experiments.FLAT_FAMILIES for l in (1, 2)}
  want |= {"matryoshka", "stacked", "csae_full", "csae_partial", "csae_bilateral"}
  assert set(models) == want
  assert models["csae_partial"]["cascade"]["stop_gradient"] == "partial"
  assert models["matryoshka"]["options"]["group_sizes"] == [c.n1, c.n2]
  assert models["relu_l2"]["options"]["n"] == c.n2
