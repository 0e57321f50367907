"""Rows 1, 5 and 11 of issue 10, with one real training subprocess: a second trainer on a live
workdir is refused naming the holder; after the holder is SIGKILLed its stale lock is taken over;
a store replaced at the same path is refused on resume (data fingerprint); the original store
resumes; NaN activations are refused before the workdir is touched."""
import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

from csae_jax import locks
from csae_jax import planted
from csae_jax import store as store_lib
from csae_jax import trainer
from csae_jax.trainer import data as data_lib

from trainer_helpers import launch_cmd
from trainer_helpers import load_config
from trainer_helpers import subprocess_env

STEPS = 150


def _tokens():
  h = planted.make_planted(planted.PlantedConfig(**load_config("tiny_relu").data.planted.to_dict()))
  return h.tokens, h.token_offsets


def _config(path):
  c = load_config("tiny_relu")
  c.steps, c.checkpoint_every, c.log_every, c.progress = STEPS, 25, 1, "never"
  c.data.kind, c.data.path = "store", str(path)
  return c


def _overrides(path):
  return [f"--config.steps={STEPS}", "--config.checkpoint_every=25", "--config.log_every=1",
          "--config.progress=never", "--config.data.kind=store", f"--config.data.path={path}"]


def test_lock_stale_takeover_and_swapped_store(tmp_path):
  toks, offsets = _tokens()
  store = tmp_path / "store"
  store_lib.write_store(str(store), toks, offsets, chunk_tokens=128)
  wd = tmp_path / "run"
  with open(tmp_path / "log.txt", "w") as log:
    proc = subprocess.Popen(launch_cmd("tiny_relu", wd, *_overrides(store)),
                            env=subprocess_env(), stdout=log, stderr=log)
    try:
      deadline = time.time() + 180
      while not (wd / "checkpoints" / "25").is_dir() and proc.poll() is None \
          and time.time() < deadline:
        time.sleep(0.02)
      assert proc.poll() is None, (tmp_path / "log.txt").read_text()[-3000:]
      with pytest.raises(locks.LockHeldError, match=f"pid {proc.pid} on host .*training"):
        trainer.train(_config(store), wd)
    finally:
      proc.send_signal(signal.SIGKILL)
      proc.wait()
  assert json.loads((wd / locks.LOCK_NAME).read_text())["pid"] == proc.pid   # left behind

  # the store is replaced at the same path by other data of the same shape
  shutil.rmtree(store)
  store_lib.write_store(str(store), toks[::-1].copy(), offsets, chunk_tokens=128)
  with pytest.raises(data_lib.DataMismatch, match="trained on different data"):
    trainer.train(_config(store), wd)                # also takes over the stale lock
  assert not (wd / locks.LOCK_NAME).exists()

  shutil.rmtree(store)                               # the original data: resumes and finishes
  store_lib.write_store(str(store), toks, offsets, chunk_tokens=128)
  result = trainer.train(_config(store), wd)
  assert result.step == STEPS


def test_nan_activations_refused_before_the_workdir_is_touched(tmp_path):
  toks, offsets = _tokens()
  toks = toks.copy()
  toks[300, 2] = np.nan
  store = tmp_path / "store"
  # the writer refuses NaN, so write a valid store and then poison it through tensorstore with a
  # matching checksum, as another tool could
  store_lib.write_store(str(store), np.zeros_like(toks), offsets, chunk_tokens=128)
  st = store_lib.ActivationStore.open(str(store))
  st._acts[0:len(toks)].write(toks).result()
  manifest = json.loads((store / store_lib.MANIFEST).read_text())
  from csae_jax.store.format import _sha256
  manifest["checksums"]["activations"] = [_sha256(toks[i:i + 128])
                                          for i in range(0, len(toks), 128)]
  (store / store_lib.MANIFEST).write_text(json.dumps(manifest))
  store_lib.ActivationStore.open(str(store), verify=True)     # checksums are valid
  for verify in (True, False):
    c = _config(store)
    c.data.verify = verify
    with pytest.raises(store_lib.StoreError, match="NaN/Inf .*token 300"):
      trainer.train(c, tmp_path / "run")
    assert not os.path.exists(tmp_path / "run")
  # an existing finished run is not wiped by an overwrite that fails on bad data
  os.makedirs(tmp_path / "run2")
  (tmp_path / "run2" / "keep.txt").write_text("x")
  c = _config(store)
  c.overwrite = True
  with pytest.raises(store_lib.StoreError, match="NaN/Inf"):
    trainer.train(c, tmp_path / "run2")
  assert (tmp_path / "run2" / "keep.txt").exists()
