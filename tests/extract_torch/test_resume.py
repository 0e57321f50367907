"""A real SIGKILL midway through `python -m launch.extract`, then resume: equals an uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from csae_jax import store as store_lib
from extract_torch import pipeline, sources

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_sigkill_midway_then_resume_equals_uninterrupted(tiny_dirs, hooked, tmp_path):
  out = str(tmp_path / "killed")
  args = dict(batch_size=2, chunk_tokens=40)
  cmd = [sys.executable, "-m", "launch.extract",
         f"--model={tiny_dirs['qwen3_vl']}", "--source=procedural:10", f"--out={out}",
         f"--batch_size={args['batch_size']}", f"--chunk_tokens={args['chunk_tokens']}",
         "--noprogress"]
  env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
  proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  progress = os.path.join(out + store_lib.PARTIAL_SUFFIX, store_lib.PROGRESS)
  committed, deadline = 0, time.time() + 120
  while time.time() < deadline and proc.poll() is None:
    try:
      with open(progress) as f:
        committed = json.load(f)["boundary"]["images"]
    except (OSError, ValueError, KeyError):
      committed = 0
    if committed >= 4:
      os.kill(proc.pid, signal.SIGKILL)
      break
    time.sleep(0.01)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
  assert not os.path.exists(out)

  source = sources.make_source("procedural:10")          # what the launch script built
  cfg = pipeline.ExtractConfig(model=tiny_dirs["qwen3_vl"], out=out, progress=False, **args)
  resumed = pipeline.extract(cfg, source, hooked=hooked["qwen3_vl"],
                             sampler_info={"sampler": "all", "seed": 0})
  assert 4 <= resumed.resumed_from < len(source) and resumed.resumed_from % 2 == 0
  ref_cfg = pipeline.ExtractConfig(model=tiny_dirs["qwen3_vl"], out=str(tmp_path / "ref"),
                                   progress=False, **args)
  ref = pipeline.extract(ref_cfg, source, hooked=hooked["qwen3_vl"])
  a = store_lib.ActivationStore.open(resumed.path, verify=True)
  b = store_lib.ActivationStore.open(ref.path, verify=True)
  assert a.image_ids == b.image_ids == source.ids          # no duplicate, no missing image
  np.testing.assert_array_equal(a.token_offsets, b.token_offsets)
  np.testing.assert_array_equal(a.read_tokens(0, a.num_tokens), b.read_tokens(0, b.num_tokens))
  assert a.manifest["checksums"] == b.manifest["checksums"]


def test_resume_refuses_changed_settings(tiny_dirs, hooked, tmp_path):
  """An interrupted partial run (writer closed mid-way) cannot be resumed with other settings."""
  source = sources.procedural_source(4)
  cfg = pipeline.ExtractConfig(model=tiny_dirs["gemma3"], out=str(tmp_path / "s"), batch_size=2,
                               chunk_tokens=64, progress=False)

  class Boom(Exception):
    pass

  calls = {"n": 0}
  real_load = source._load

  def flaky(i):                    # interrupt the run at the 7th image
    calls["n"] += 1
    if calls["n"] == 7:
      raise Boom()
    return real_load(i)

  source._load = flaky
  with pytest.raises(Boom):
    pipeline.extract(cfg, source, hooked=hooked["gemma3"])
  source._load = real_load
  assert os.path.isdir(cfg.out + store_lib.PARTIAL_SUFFIX)
  cfg.batch_size = 4
  with pytest.raises(store_lib.StoreError, match="fingerprint.batch_size: 2 -> 4"):
    pipeline.extract(cfg, source, hooked=hooked["gemma3"])
  cfg.batch_size = 2
  res = pipeline.extract(cfg, source, hooked=hooked["gemma3"])
  # batches [0,2) [2,4) [4,6) were written (each image fills a 64-token chunk), all committed
  assert res.resumed_from == 6 and res.num_images == len(source)
