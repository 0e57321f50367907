"""train / load_run on one device: the loop equals a plain loop, run-dir outputs, resume, refusals."""
import json
import shutil
import struct

import jax
import numpy as np
import pytest

from csae_jax import planted
from csae_jax import step as step_lib
from csae_jax import trainer
from csae_jax.models import build_model
from csae_jax.trainer import data as data_lib

from trainer_helpers import leaves
from trainer_helpers import load_config


@pytest.fixture(scope="module")
def relu_run(tmp_path_factory):
  """A finished 40-step tiny ReLU run (checkpoints at 20 and 40)."""
  wd = tmp_path_factory.mktemp("relu") / "run"
  config = load_config("tiny_relu")
  config.data.input_scale = 2.0        # exact division: the plain loop below must match bitwise
  result = trainer.train(config, wd)
  return config, wd, result


def _plain_loop(config):
  """The same run written directly against csae_jax.step (the independent reference)."""
  model = build_model(config.model, config.steps)
  tokens = planted.make_planted(planted.PlantedConfig(**config.data.planted.to_dict())).tokens
  rule = data_lib.BatchRule(len(tokens), config.batch_size, config.seed)
  opt, schedule = step_lib.make_optimizer(model, config.steps, lr=config.lr,
                                          warmup_steps=config.warmup_steps)
  x0 = tokens[rule.indices(0)] / np.float32(config.data.input_scale)
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0)
  ts = jax.jit(lambda k, x: step_lib.init_train_state(model, opt, k, x))(key, x0)
  step = step_lib.make_jitted_step(model, opt, schedule)
  for s in range(config.steps):
    ts, _ = step(ts, tokens[rule.indices(s)] / np.float32(config.data.input_scale))
  return ts


def test_train_equals_a_plain_loop(relu_run):
  config, wd, result = relu_run
  assert result.step == config.steps and not result.preempted
  run = trainer.load_run(wd)
  ref = _plain_loop(config)
  assert run.step == config.steps and run.finished and run.input_scale == 2.0
  for a, b in zip(leaves(run.params), leaves(ref.params)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  for a, b in zip(leaves(run.model_state), leaves(ref.model_state)):
    np.testing.assert_array_equal(a, b)


def _read_tb_tags(path):
  """Scalar tags in a TensorBoard event file (TFRecord framing, Event protos from tensorboardX)."""
  from tensorboardX.proto import event_pb2
  tags, data = set(), path.read_bytes()
  pos = 0
  while pos < len(data):
    (length,) = struct.unpack("<Q", data[pos:pos + 8])
    event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
    tags.update(v.tag for v in event.summary.value)
    pos += 12 + length + 4
  return tags


def test_run_directory_outputs(relu_run):
  config, wd, _ = relu_run
  rows = [json.loads(l) for l in (wd / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [10, 20, 30, 40]
  for key in ("loss", "fvu", "l0", "dead_fraction", "lr", "grad_norm", "tokens_per_s"):
    assert all(np.isfinite(r[key]) for r in rows), key
  assert rows[-1]["fvu"] < rows[0]["fvu"]                       # it learns
  events = list((wd / "tensorboard").glob("events.out.tfevents.*"))
  assert events and {"loss", "fvu", "lr", "tokens_per_s"} <= _read_tb_tags(events[0])
  saved = json.loads((wd / "config.json").read_text())
  assert saved["model"]["options"]["n"] == 64 and saved["steps"] == 40
  assert sorted(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit()) == [20, 40]
  early = trainer.load_run(wd, step=20)
  assert early.step == 20 and not early.finished
  with pytest.raises(ValueError, match="no checkpoint at step 10"):
    trainer.load_run(wd, step=10)
  # Params are for x / s; raw_params() folds s in: same reconstruction of raw activations.
  run = trainer.load_run(wd)
  x = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32)
  raw_p, raw_s = run.raw_params()
  xhat_scaled = run.model.decode(run.params, run.model.encode(run.params, run.model_state,
                                                              x / run.input_scale))
  xhat_raw = run.model.decode(raw_p, run.model.encode(raw_p, raw_s, x))
  np.testing.assert_allclose(np.asarray(xhat_raw), run.input_scale * np.asarray(xhat_scaled),
                             rtol=1e-4, atol=1e-5)


def test_finished_run_is_not_overwritten_unless_asked(relu_run, tmp_path):
  config, wd, _ = relu_run
  copy = tmp_path / "run"
  shutil.copytree(wd, copy)
  before = (copy / "checkpoints").stat().st_mtime
  with pytest.raises(trainer.RunFinishedError, match="finished run"):
    trainer.train(config, copy)
  assert (copy / "checkpoints").stat().st_mtime == before
  changed = load_config("tiny_relu")
  changed.data.input_scale = 2.0
  changed.steps = 10
  changed.overwrite = True
  result = trainer.train(changed, copy)
  assert result.step == 10 and trainer.load_run(copy).step == 10


def test_unfinished_run_with_another_config_is_refused(relu_run, tmp_path):
  config, wd, _ = relu_run
  copy = tmp_path / "run"
  shutil.copytree(wd, copy)
  (copy / "run.json").unlink()
  changed = load_config("tiny_relu")
  changed.data.input_scale = 2.0
  changed.model.options.l1_coef = 1.0
  with pytest.raises(ValueError, match="model.options.l1_coef"):
    trainer.train(changed, copy)


def test_resume_from_a_checkpoint_is_exact(relu_run, tmp_path):
  """Drop the last checkpoint (as if killed after step 20) and resume: the same final state."""
  config, wd, _ = relu_run
  final = trainer.load_run(wd, with_opt_state=True)
  copy = tmp_path / "run"
  shutil.copytree(wd, copy)
  shutil.rmtree(copy / "checkpoints" / "40")
  (copy / "run.json").unlink()
  result = trainer.train(config, copy)
  assert result.step == 40 and result.checkpoint_steps == [40]
  again = trainer.load_run(copy, with_opt_state=True)
  for a, b in zip(leaves((final.params, final.opt_state, final.model_state)),
                  leaves((again.params, again.opt_state, again.model_state))):
    np.testing.assert_array_equal(a, b)
  rows = [json.loads(l)["step"] for l in (copy / "metrics.jsonl").read_text().splitlines()]
  assert rows == [10, 20, 30, 40]


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  """NaN rows arrive in the batch of step 5: the run stops, checkpoint 4 stays the latest."""
  config = load_config("tiny_relu")
  config.checkpoint_every = 2
  config.keep = 10
  config.data.input_scale = 2.0
  calls = {"n": 0}
  read_rows = data_lib.ArraySource.read_rows

  def poisoned(self, indices):
    rows = read_rows(self, indices)
    calls["n"] += 1
    if calls["n"] == 1 + 6:            # call 1: the first batch for init; then steps 0, 1, ...
      rows[0, 0] = np.nan
    return rows

  monkeypatch.setattr(data_lib.ArraySource, "read_rows", poisoned)
  with pytest.raises(trainer.TrainingDiverged, match=r"the loss is nan at step 6") as err:
    trainer.train(config, tmp_path / "run")
  assert "the last good checkpoint is step 4" in str(err.value)
  info = json.loads((tmp_path / "run" / "diverged.json").read_text())
  assert info["step"] == 6 and info["last_good_checkpoint"] == 4
  run = trainer.load_run(tmp_path / "run")
  assert run.step == 4 and not run.finished
  assert all(np.isfinite(x).all() for x in leaves(run.params))


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_overflowing_update_is_never_checkpointed(tmp_path):
  config = load_config("tiny_relu")
  config.checkpoint_every = 1
  config.warmup_steps = 0
  config.lr = 1e39                     # inf in float32: the first update overflows
  with pytest.raises(trainer.TrainingDiverged, match="NaN/Inf"):
    trainer.train(config, tmp_path / "run")
  assert not [p for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit()]


def test_bad_config_values_raise_before_any_work(tmp_path):
  config = load_config("tiny_relu")
  config.batch_size = 0
  with pytest.raises(ValueError, match="config.batch_size must be a positive integer"):
    trainer.train(config, tmp_path / "a")
  config = load_config("tiny_relu")
  config.data.kind = "parquet"
  with pytest.raises(ValueError, match="config.data.kind"):
    trainer.train(config, tmp_path / "b")
  with pytest.raises(FileNotFoundError, match="holds no run"):
    trainer.load_run(tmp_path / "nothing")
  assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_device_resident_mode_matches_host_batches(relu_run, tmp_path):
  config, wd, _ = relu_run
  resident = load_config("tiny_relu")
  resident.data.input_scale = 2.0
  resident.data.device_resident = True
  trainer.train(resident, tmp_path / "run")
  a, b = trainer.load_run(wd), trainer.load_run(tmp_path / "run")
  for x, y in zip(leaves(a.params), leaves(b.params)):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
  resident.data.device_max_bytes = 1000
  with pytest.raises(ValueError, match="device_max_bytes"):
    trainer.train(resident, tmp_path / "too_big")
