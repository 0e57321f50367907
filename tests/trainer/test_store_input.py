"""Training from an activation store: same result as the same tokens in memory; clear errors
before training for corrupt / truncated chunks, manifest-array mismatches and wrong dimensions."""
import json
import os

import numpy as np
import pytest

from csae_jax import planted
from csae_jax import store as store_lib
from csae_jax import trainer

from trainer_helpers import leaves
from trainer_helpers import load_config

STEPS = 6


@pytest.fixture(scope="module")
def tokens():
  cfg = load_config("tiny_relu").data.planted.to_dict()
  h = planted.make_planted(planted.PlantedConfig(**cfg))
  return h.tokens, h.token_offsets


@pytest.fixture()
def store_path(tmp_path, tokens):
  toks, offsets = tokens
  path = str(tmp_path / "store")
  store_lib.write_store(path, toks, offsets, chunk_tokens=128, split="train", model="planted",
                        hooked_module="none")
  return path


def _store_config(path, **data):
  c = load_config("tiny_relu")
  c.steps = STEPS
  c.checkpoint_every = STEPS
  c.data.kind = "store"
  c.data.path = path
  for k, v in data.items():
    c.data[k] = v
  return c


@pytest.mark.parametrize("cache", [True, False], ids=["host_cache", "read_rows"])
def test_store_training_equals_in_memory_training(tmp_path, store_path, cache):
  ref_cfg = load_config("tiny_relu")
  ref_cfg.steps = STEPS
  ref_cfg.checkpoint_every = STEPS
  trainer.train(ref_cfg, tmp_path / "ref")
  trainer.train(_store_config(store_path, split="train", host_cache_bytes=(1 << 30) if cache
                              else 0, shuffle="global"), tmp_path / "store_run")
  a, b = trainer.load_run(tmp_path / "ref"), trainer.load_run(tmp_path / "store_run")
  assert a.input_scale == b.input_scale
  for x, y in zip(leaves(a.params), leaves(b.params)):
    np.testing.assert_array_equal(x, y)


def _no_training(workdir):
  return not (workdir / "checkpoints").exists()


def test_truncated_chunk(tmp_path, store_path):
  f = store_lib.chunk_file(store_path, 2)
  with open(f, "r+b") as fh:
    fh.truncate(os.path.getsize(f) - 10)
  with pytest.raises(store_lib.StoreError, match="chunk 2"):
    trainer.train(_store_config(store_path), tmp_path / "run")
  assert _no_training(tmp_path / "run")


def test_corrupt_chunk_found_by_verify(tmp_path, store_path):
  f = store_lib.chunk_file(store_path, 1)
  raw = bytearray(open(f, "rb").read())
  raw[len(raw) // 2] ^= 0xFF
  open(f, "wb").write(bytes(raw))
  with pytest.raises(store_lib.StoreError, match="chunk 1"):
    trainer.train(_store_config(store_path, verify=True), tmp_path / "run")
  assert _no_training(tmp_path / "run")


def test_manifest_that_does_not_match_the_array(tmp_path, store_path):
  mpath = os.path.join(store_path, "manifest.json")
  manifest = json.load(open(mpath))
  manifest["num_tokens"] += 5
  json.dump(manifest, open(mpath, "w"))
  with pytest.raises(store_lib.StoreError, match="shape"):
    trainer.train(_store_config(store_path), tmp_path / "run")
  assert _no_training(tmp_path / "run")


def test_dimension_and_split_mismatch(tmp_path, store_path):
  c = _store_config(store_path)
  c.model.d = 32
  with pytest.raises(ValueError, match=r"has d=16 but config.model.d=32"):
    trainer.train(c, tmp_path / "run")
  with pytest.raises(ValueError, match="split 'train' but config.data.split='test'"):
    trainer.train(_store_config(store_path, split="test"), tmp_path / "run")
  assert _no_training(tmp_path / "run")


def test_model_d_comes_from_the_store_manifest(tmp_path):
  """A config without model.d takes the store's d (issue 11: no --config.model.d=32)."""
  import json

  import pytest
  from configs import common
  from csae_jax.trainer import config as cfg_lib
  from csae_jax.trainer import data as data_lib
  (tmp_path / "manifest.json").write_text(json.dumps({"d": 48}))
  c = cfg_lib.complete(common.tiny_planted(5))
  del c.model["d"]
  c.model.name = "relu"
  c.data.kind, c.data.path = "store", str(tmp_path)
  data_lib.fill_model_d(c)
  assert c.model.d == 48
  c.model.d = 32                         # an explicit d is kept (and checked against the data)
  data_lib.fill_model_d(c)
  assert c.model.d == 32
  del c.model["d"]
  c.data.path = str(tmp_path / "missing")
  with pytest.raises(FileNotFoundError, match="model.d is unset"):
    data_lib.fill_model_d(c)
  p = cfg_lib.complete(common.tiny_planted(5))
  del p.model["d"]
  data_lib.fill_model_d(p)
  assert p.model.d == p.data.planted.d == 16


def test_device_tokens_keep_bfloat16():
  """device_resident with a bfloat16 source: no float32 copy of the whole store on device."""
  import jax
  import jax.numpy as jnp
  import ml_dtypes
  from jax.sharding import NamedSharding, PartitionSpec
  from csae_jax.trainer import data as data_lib
  tokens = np.random.default_rng(0).normal(size=(64, 8)).astype(ml_dtypes.bfloat16)
  src = data_lib.ArraySource(tokens, "bf16 tokens")
  sharding = NamedSharding(jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("x",)),
                           PartitionSpec())
  on_device = data_lib.device_tokens(src, sharding, max_bytes=64 * 8 * 2)
  assert on_device.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(on_device, np.float32), tokens.astype(np.float32))
