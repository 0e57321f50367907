"""TensorBoard: a family's tags are the same flat or inside a cascade; the config is written as
text and hparams; the experiment runner adds evaluation scalars (issue 11, item 5)."""
import json

import pytest

from csae_jax.trainer import metrics as metrics_lib
from tests.tb_events import read_events


def test_flat_tags_match_a_cascade_level():
  flat = {"fvu": 0.2, "l0": 3.0, "loss": 0.5, "lr": 1e-3, "grad_norm": 1.0}
  tags = metrics_lib.tensorboard_tags(flat)
  assert tags["l1/fvu"] == 0.2 and tags["l1/l0"] == 3.0 and tags["l1/loss"] == 0.5
  assert tags["fvu"] == 0.2 and "l1/lr" not in tags and "l1/grad_norm" not in tags
  casc = {"l1/fvu": 0.2, "l2/fvu": 0.4, "loss": 0.6, "lr": 1e-3}
  assert metrics_lib.tensorboard_tags(casc) == casc
  # every family metric a flat run logs is a tag a cascade's Level 1 has
  assert {t for t in tags if t.startswith("l1/")} == {"l1/fvu", "l1/l0", "l1/loss"}


def test_writer_logs_l1_tags_config_text_and_hparams(tmp_path):
  config = {"steps": 10, "lr": 0.001, "model": {"name": "relu", "d": 16,
                                                "options": {"n": 64, "group_sizes": [4, 8]}}}
  w = metrics_lib.MetricWriter(tmp_path / "m.jsonl", tmp_path / "tb", 0, config=config)
  w.write(5, {"fvu": 0.25, "loss": 0.5, "lr": 1e-3})
  w.close()
  scalars, plugins = read_events(tmp_path / "tb")
  assert scalars["l1/fvu"] == [(5, 0.25)] and scalars["fvu"] == [(5, 0.25)]
  assert "l1/lr" not in scalars and scalars["lr"] == [(5, pytest.approx(1e-3))]
  assert plugins.get("config/text_summary") == "text"
  assert set(plugins.values()) >= {"hparams", "text"}
  row = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[0])
  assert row == {"step": 5, "fvu": 0.25, "loss": 0.5, "lr": 1e-3}   # metrics.jsonl unchanged
  hp = metrics_lib._flat_hparams(config)
  assert hp["model.options.n"] == 64 and hp["model.options.group_sizes"] == "[4, 8]"


def test_eval_scalars_of_a_summary():
  from csae_jax.evaluation import experiments
  s = {"hms": {"mean": 0.9, "median": 0.8, "count": 4, "min": 0.1},
       "recon": {"fvu": 0.2, "tokens": 384}, "recovery": {"parent_purity": 0.75, "note": "x",
                                                          "nan": float("nan")}}
  assert experiments.eval_scalars(s) == {
      "eval/hms_mean": 0.9, "eval/hms_median": 0.8, "eval/hms_count": 4.0, "eval/recon_fvu": 0.2,
      "eval/recovery/parent_purity": 0.75}



def test_eval_scalars_take_numpy_numbers():
  import numpy as np

  from csae_jax.evaluation import experiments
  s = {"hms": {"mean": np.float32(0.5)}, "recovery": {"n": np.int64(3), "ok": True}}
  assert experiments.eval_scalars(s) == {"eval/hms_mean": 0.5, "eval/recovery/n": 3.0}
