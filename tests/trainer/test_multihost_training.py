"""Two processes on 127.0.0.1 with jax.distributed train together and agree with one process."""
import socket
import subprocess

import numpy as np
import pytest

from csae_jax import trainer

from trainer_helpers import launch_cmd
from trainer_helpers import leaves
from trainer_helpers import load_config
from trainer_helpers import max_rel_diff
from trainer_helpers import subprocess_env

TIMEOUT_S = 120


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_agree_with_one(tmp_path):
  port = _free_port()
  two = tmp_path / "two"
  cmds = [launch_cmd("tiny_relu", two, f"--coordinator=127.0.0.1:{port}", "--num_processes=2",
                     f"--process_id={i}") for i in range(2)]
  env = subprocess_env(devices=1)
  procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for c in cmds]
  try:
    outs = [p.communicate(timeout=TIMEOUT_S) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert "process 1 of 2" in outs[1][1] and "2 global devices" in outs[0][1]

  one = tmp_path / "one"        # the same run in this process, on one device
  trainer.train(load_config("tiny_relu"), one)

  a, b = (trainer.load_run(w, with_opt_state=True) for w in (two, one))
  assert a.step == b.step == 40 and a.input_scale == b.input_scale
  assert max_rel_diff(a.params, b.params) < 1e-5
  assert max_rel_diff(a.opt_state, b.opt_state) < 1e-5
  for x, y in zip(leaves(a.model_state), leaves(b.model_state)):
    np.testing.assert_array_equal(x, y)
  rows = (two / "metrics.jsonl").read_text().splitlines()
  assert len(rows) == 4          # only process 0 writes metrics
