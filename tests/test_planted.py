"""The planted hierarchy's ground truth, the recovery report, and the first main job end to end."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from csae_jax import planted

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ground_truth_structure():
  cfg = planted.PlantedConfig(d=32, n_parents=3, children_per_parent=4, n_images=20,
                              tokens_per_image=8, noise=0.0, offset_scale=0.0)
  pl = planted.make_planted(cfg)
  assert pl.tokens.shape == (160, 32) and pl.tokens.dtype == np.float32
  np.testing.assert_array_equal(pl.token_offsets, np.arange(21) * 8)
  np.testing.assert_allclose(np.linalg.norm(pl.child_dirs, axis=1), 1, rtol=1e-6)
  # Each child = parent + its own orthogonal part: cos(child, parent) = 1/sqrt(1 + s^2).
  cos = np.sum(pl.child_dirs * pl.parent_dirs[pl.child_parent], 1)
  np.testing.assert_allclose(cos, 1 / np.sqrt(1 + 0.9 ** 2), rtol=1e-5)
  # Noise-free tokens are non-negative mixtures of active_per_token children.
  coef, *_ = np.linalg.lstsq(pl.child_dirs.T, pl.tokens.T, rcond=None)
  coef[np.abs(coef) < 1e-4] = 0
  assert (coef >= 0).all() and ((coef > 0).sum(0) == cfg.active_per_token).all()
  assert pl.embeddings.shape == (20, cfg.embed_dim)


def test_recovery_report_on_the_truth_and_on_a_shuffle():
  pl = planted.make_planted(planted.PlantedConfig(n_images=4, tokens_per_image=4))
  perfect = planted.recovery_report(pl, pl.child_dirs, pl.child_parent, pl.parent_dirs)
  assert perfect["children_recovered"] == 1.0 and perfect["parent_match"] == 1.0
  assert perfect["parent_purity"] == 1.0 and perfect["parents_recovered"] == 1.0
  rng = np.random.default_rng(0)
  shuffled = planted.recovery_report(pl, pl.child_dirs, rng.permutation(pl.child_parent),
                                     pl.parent_dirs)
  assert shuffled["parent_match"] < 0.6


def test_bad_planted_config():
  with pytest.raises(ValueError, match="planted.n_parents must be a positive integer, got 0"):
    planted.make_planted(planted.PlantedConfig(n_parents=0))


@pytest.mark.slow
def test_main_job_recovers_planted_parents(tmp_path):
  """The README's main job, shortened: parents recovered far above chance, files written."""
  wd = tmp_path / "run"
  cmd = [sys.executable, "-m", "launch.planted", "--config=configs/planted_csae.py",
         f"--workdir={wd}", "--config.steps=1500", "--config.log_every=500"]
  env = dict(os.environ, PYTHONPATH=ROOT)
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  steps = [json.loads(l)["step"] for l in (wd / "metrics.jsonl").read_text().splitlines()]
  assert steps[-1] == 1500                       # the trainer logged to the end
  assert (wd / "checkpoints").is_dir()
  rep = json.loads((wd / "report.json").read_text())["summary"]
  assert rep["parent_match"] > 4 * rep["parent_match_chance"]
  assert rep["children_recovered"] >= 0.75 and rep["level1"]["fvu"] < 0.1
  units = json.loads((wd / "hierarchy.json").read_text())["units"]
  assert len(units) == 8
  # A finished run is never overwritten without the flag.
  again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert again.returncode != 0 and "overwrite" in again.stderr
