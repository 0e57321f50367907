"""A run killed (SIGKILL) at a random step and resumed ends bitwise equal to an uninterrupted run;
SIGTERM writes a checkpoint first (exit status 143) and the run then resumes exactly."""
import json
import random
import signal
import subprocess
import time

import numpy as np
import pytest

from csae_jax import trainer

from trainer_helpers import launch_cmd
from trainer_helpers import leaves
from trainer_helpers import load_config
from trainer_helpers import subprocess_env

STEPS = 150
OVERRIDES = {"steps": STEPS, "log_every": 1, "checkpoint_every": 7, "keep": 2}


def _config():
  c = load_config("tiny_csae")
  for k, v in OVERRIDES.items():
    c[k] = v
  return c


def _cmd(workdir):
  return launch_cmd("tiny_csae", workdir, *(f"--config.{k}={v}" for k, v in OVERRIDES.items()))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  wd = tmp_path_factory.mktemp("ref") / "run"
  config = _config()
  config.log_every = config.checkpoint_every = STEPS   # runtime keys: same computation
  trainer.train(config, wd)
  return trainer.load_run(wd, with_opt_state=True)


def _last_step(workdir) -> int:
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return 0
  steps = []
  for line in path.read_text().splitlines():
    try:
      steps.append(json.loads(line)["step"])
    except (json.JSONDecodeError, KeyError):
      pass
  return max(steps, default=0)


def _start_and_signal(workdir, at_step: int, sig):
  """Runs `python -m launch.train`, sends `sig` once step `at_step` is logged; (exit status, log)."""
  log = workdir.parent / "log.txt"
  with open(log, "w") as f:   # a file, not a pipe: a full pipe would block the child
    proc = subprocess.Popen(_cmd(workdir), env=subprocess_env(), stdout=f, stderr=f)
    deadline = time.time() + 120
    while _last_step(workdir) < at_step and proc.poll() is None and time.time() < deadline:
      time.sleep(0.005)
    running = proc.poll() is None
    proc.send_signal(sig)
    try:
      proc.wait(timeout=60)
    finally:
      if proc.poll() is None:
        proc.kill()
  assert running, f"the run ended before step {at_step}: {log.read_text()[-2000:]}"
  return proc.returncode, log.read_text()


def _assert_same_state(a, b):
  for x, y in zip(leaves((a.params, a.opt_state, a.model_state)),
                  leaves((b.params, b.opt_state, b.model_state))):
    np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_is_bitwise_exact(reference, tmp_path):
  at = random.Random().randint(3, STEPS - 40)
  wd = tmp_path / "run"
  code, _ = _start_and_signal(wd, at, signal.SIGKILL)
  assert code == -signal.SIGKILL
  killed_at = _last_step(wd)
  assert killed_at < STEPS and not (wd / "run.json").exists()
  result = trainer.train(_config(), wd)          # resumes from the last complete checkpoint
  assert result.step == STEPS
  assert STEPS not in result.checkpoint_steps[:-1]
  _assert_same_state(trainer.load_run(wd, with_opt_state=True), reference)
  rows = [json.loads(l)["step"] for l in (wd / "metrics.jsonl").read_text().splitlines()]
  assert rows == list(range(1, STEPS + 1)), f"killed near step {killed_at} (target {at})"


@pytest.mark.slow
def test_sigterm_checkpoints_first_then_resumes_exactly(reference, tmp_path):
  at = random.Random().randint(3, STEPS - 40)
  wd = tmp_path / "run"
  code, log = _start_and_signal(wd, at, signal.SIGTERM)
  assert code == 143, log[-2000:]
  assert "checkpoint saved" in log
  stopped = trainer.load_run(wd)
  assert stopped.step >= at and stopped.step == _last_step(wd) < STEPS
  assert not stopped.finished
  result = trainer.train(_config(), wd)
  assert result.step == STEPS
  _assert_same_state(trainer.load_run(wd, with_opt_state=True), reference)
