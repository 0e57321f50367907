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


def test_progress_plan_eta_and_paths(tmp_path):
  """The ETA is the measured pace times what is left: 2 of 3 runs trained in 10 s and 30 s ->
  20 s per run, 1 run left; 1 of 2 evaluations took 4 s -> 4 s more; 24 s in all."""
  from csae_jax.evaluation import progress as progress_lib
  said = []
  p = progress_lib.Progress(["a_l1", "a_l2", "csae_full"], ["old"], ["a", "csae"], ["hac"],
                            steps=100, batch_size=64, say=said.append)
  p.plan(["a", "csae"], ["hac"])
  assert "train 3 runs x 100 steps (batch 64): a_l1, a_l2, csae_full; reuse 1 finished: old" \
      in said[1]
  assert "evaluate 2: a, csae; cached 1: hac" in said[2]
  assert p.eta_s() is None
  p.start_run("a_l1")
  p.end_run("a_l1", 10.0)
  p.end_run("a_l2", 30.0)
  assert said[-1].startswith("[train 2/3] a_l2 done in 30s (3.3 steps/s)")
  assert p.eta_s() is None and said[-1].endswith("ETA after the first evaluation")
  p.end_eval("a", 4.0, 0.5)
  assert p.eta_s() == pytest.approx(24.0) and said[-1].endswith("ETA 24s")
  (tmp_path / "tables").mkdir()
  (tmp_path / "tables" / "table1_2.md").write_text("x")
  (tmp_path / "browser").mkdir()
  (tmp_path / "browser" / "index.html").write_text("x")
  lines = p.wrote(str(tmp_path))
  assert any("table1_2.md" in l for l in lines)
  assert any(l.strip() == f"browser: {tmp_path / 'browser' / 'index.html'}" for l in lines)


def test_rerun_says_everything_is_reused(experiment, capsys):
  experiments.run_experiment(experiment["config"], experiment["workdir"])
  out = capsys.readouterr().out
  assert "plan: train 0 runs" in out and "plan: evaluate 0: -; cached" in out
  assert "browser: " in out and "index.html" in out


def test_runner_writes_eval_scalars_next_to_the_training_curves(experiment):
  """TensorBoard: HMS and recovery at the last step, next to each run's training curves."""
  from tests.tb_events import read_events
  wd = experiment["workdir"]
  steps = experiment["config"].steps
  csae, _ = read_events(os.path.join(wd, "runs", "csae_full", "tensorboard"))
  summary = experiment["out"]["summaries"]["csae"]
  assert csae["eval/hms_mean"][-1] == (steps, pytest.approx(summary["hms"]["mean"], rel=1e-6))
  assert "l1/fvu" in csae
  rec = summary["recovery"]["mean_best_child_cos"]     # NaN recovery entries are left out
  assert csae["eval/recovery/mean_best_child_cos"] == [(steps, pytest.approx(rec, rel=1e-6))]
  flat, _ = read_events(os.path.join(wd, "runs", "batchtopk_l1", "tensorboard"))
  assert "l1/fvu" in flat and "eval/hms_mean" in flat and "eval/hac/hms_mean" in flat


def test_posthoc_clustering_of_a_csae_reads_its_level_one_parameters():
  """HAC / spectral on the CSAE cluster the CSAE's Level-1 atoms: the Subject is a flat SAE with
  Level 1's parameters (mutation gap experiments._subject `p[0], s[0]`), checked against a NumPy
  ReLU encoder of Level 1."""
  import types

  import jax
  import ml_collections

  from csae_jax.models import build_model
  d, n1, n2 = 6, 12, 4
  m = build_model({"name": "cascade", "d": d, "levels": [
      {"family": "relu", "n": n1}, {"family": "relu", "n": n2}]})
  rng = np.random.default_rng(3)
  p, s = m.init(jax.random.PRNGKey(3), rng.normal(size=(8, d)).astype(np.float32))
  p = jax.tree_util.tree_map(np.asarray, p)
  p[0]["b_enc"] = (0.3 * rng.normal(size=n1)).astype(np.float32)
  run = types.SimpleNamespace(model=m, raw_params=lambda: (p, s))
  config = ml_collections.ConfigDict({"posthoc_source": "csae", "eval": {
      "encoding": "batch", "coact_source": "dense", "matryoshka_groups": (0, 1)}})
  for method in ("hac", "spectral"):
    subj, posthoc = experiments._subject(config, method, {"csae_full": run})
    assert posthoc == method and subj.kind == "flat" and subj.n1 == n1
    np.testing.assert_array_equal(subj.atoms1, p[0]["W_dec"])
    x = rng.normal(size=(5, d)).astype(np.float32)
    codes, _, xhat = subj.level1(x, np.ones(5, bool))
    x64 = x.astype(np.float64)
    want = np.maximum((x64 - p[0]["b_dec"]) @ p[0]["W_enc"] + p[0]["b_enc"], 0.0)
    np.testing.assert_allclose(np.asarray(codes), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(xhat), want @ p[0]["W_dec"] + p[0]["b_dec"],
                               rtol=1e-5, atol=1e-5)
