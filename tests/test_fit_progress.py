"""step.fit reports progress (issue 11, item 3): ten lines by default, rate and ETA in each."""
import jax
import numpy as np
from absl import logging

from csae_jax import step as step_lib
from csae_jax.models import build_model


def _model():
  return build_model(dict(name="topk", d=8, options=dict(n=16, k=2, aux_k=None)), 20)


def _batches():
  rng = np.random.default_rng(0)
  while True:
    yield rng.normal(size=(32, 8)).astype(np.float32)


def test_fit_logs_every_tenth_by_default(monkeypatch):
  lines = []
  monkeypatch.setattr(logging, "info", lambda fmt, *a: lines.append(fmt % a))
  step_lib.fit(_model(), _batches(), 20, key=jax.random.PRNGKey(0), warmup_steps=2)
  fit_lines = [l for l in lines if l.startswith("fit: ")]
  assert len(fit_lines) == 10
  assert fit_lines[0].startswith("fit: step 2/20 (10%)") and "ETA" in fit_lines[0]
  assert fit_lines[-1].startswith("fit: step 20/20 (100%)") and "ETA 0s" in fit_lines[-1]


def test_fit_custom_and_silent():
  seen = []
  step_lib.fit(_model(), _batches(), 20, key=jax.random.PRNGKey(0), warmup_steps=2, log_every=8,
               log_fn=lambda i, m: seen.append((i, "loss" in m and "tokens_per_s" in m)))
  assert seen == [(8, True), (16, True), (20, True)]


def test_progress_line_rate_and_eta():
  line = step_lib.progress_line(50, 200, {"loss": 0.25}, 10.0)
  assert line == "fit: step 50/200 (25%), 5.0 step/s, ETA 30s, loss 0.25"
  assert "loss" not in step_lib.progress_line(1, 2, {}, 1.0)
  assert step_lib.progress_line(200, 200, {}, 4.0).endswith("ETA 0s")
