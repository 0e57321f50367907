"""`train(config, workdir)` and `load_run(workdir)`: the checkpointing, resuming training loop.

A run is a pure function of its config: the initial state comes from config.seed and the first
batch, batch s from (config.seed, s) (data.BatchRule), and each step is the jit-compiled
csae_jax.step.train_step over the mesh (mesh.py). So resuming from the checkpoint of step s
continues exactly as if never stopped (bitwise on CPU).
"""
from __future__ import annotations

import dataclasses
import pathlib
import signal
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from csae_jax import locks
from csae_jax import step as step_lib
from csae_jax.models import Model
from csae_jax.models import build_model
from csae_jax.trainer import checkpoint as ckpt_lib
from csae_jax.trainer import config as cfg_lib
from csae_jax.trainer import data as data_lib
from csae_jax.trainer import mesh as mesh_lib
from csae_jax.trainer import metrics as metrics_lib
from csae_jax.trainer import multihost


class RunFinishedError(RuntimeError):
  """The workdir holds a finished run and the config did not ask to overwrite it.

  same_config: the run was asked for again unchanged, so there is nothing to do (launch/train.py
  prints one line and exits 0); otherwise the config differs and the refusal is an error.
  """

  def __init__(self, message: str, step: int | None = None, same_config: bool = False):
    super().__init__(message)
    self.step = step
    self.same_config = same_config


class TrainingDiverged(FloatingPointError):
  """The loss became NaN/Inf; the last good checkpoint is kept."""


@dataclasses.dataclass
class Run:
  """A trained (or partly trained) model read back from a workdir.

  params are for x / input_scale; `raw_params()` folds the scale in for raw activations.
  """
  config: ml_collections.ConfigDict
  model: Model
  params: Any
  model_state: Any
  step: int
  input_scale: float
  workdir: str
  finished: bool = False
  opt_state: Any = None

  def raw_params(self):
    """(params, model_state) for raw activations x_raw = input_scale * x (SPEC 1)."""
    return self.model.fold_scale(self.params, self.model_state, self.input_scale)


@dataclasses.dataclass
class TrainResult:
  workdir: str
  step: int
  metrics: dict[str, float]
  input_scale: float
  preempted: bool
  elapsed_s: float
  tokens_per_s: float
  checkpoint_steps: list[int]
  bytes_per_device: dict[str, int]   # of the first local device: params, opt_state (and global)


# ----------------------------------------------------------------------------- helpers
def _host(x) -> np.ndarray:
  """Value of a replicated (possibly multi-process) array on this host."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return np.asarray(x.addressable_data(0))
  return np.asarray(x)


def _to_global(tree, shardings):
  """Host (numpy) values -> global arrays with the given shardings (same values on every process)."""
  def put(x, s):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])
  return jax.tree_util.tree_map(put, tree, shardings)


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


@jax.jit
def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))


def _abstract_state(model: Model, optimizer, d: int):
  return jax.eval_shape(lambda k, x: step_lib.init_train_state(model, optimizer, k, x),
                        jax.random.PRNGKey(0), jax.ShapeDtypeStruct((8, d), jnp.float32))


def _with_shardings(abstract, shardings):
  return jax.tree_util.tree_map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def _make_optimizer(model, config):
  return step_lib.make_optimizer(model, config.steps, lr=config.lr,
                                 warmup_steps=config.warmup_steps,
                                 decay_start_frac=config.decay_start_frac,
                                 clip_norm=config.clip_norm)


def make_step(model: Model, optimizer, schedule, input_scale: float, layout: mesh_lib.Layout,
              split_level2: bool = True, device_resident: bool = False):
  """The jit-compiled step over the mesh: (TrainState, raw batch) -> (TrainState, metrics).

  device_resident: (TrainState, tokens on every device, int32 indices [B]) -> the same.
  """
  smodel = mesh_lib.sharded_model(model, layout.mesh, split_level2)
  scale = np.float32(input_scale)

  def step(ts, x):
    return step_lib.train_step(smodel, optimizer, schedule, ts, x / scale)

  if device_resident:
    def gather_step(ts, tokens, idx):
      x = jnp.take(tokens, idx, axis=0).astype(jnp.float32)    # bf16 stores stay compact
      x = jax.lax.with_sharding_constraint(x, layout.batch)
      return step(ts, x)
    return jax.jit(gather_step,
                   in_shardings=(layout.state, layout.replicated, layout.batch_indices),
                   out_shardings=(layout.state, layout.replicated), donate_argnums=(0,))
  return jax.jit(step, in_shardings=(layout.state, layout.batch),
                 out_shardings=(layout.state, layout.replicated), donate_argnums=(0,))


class _Preemption:
  """SIGTERM sets a flag; the loop saves a checkpoint and stops at the next step boundary."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread() and jax.process_count() == 1:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    logging.warning("signal %d: saving a checkpoint at the next step boundary", signum)
    self.requested = True

  def check(self, step: int) -> bool:
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      try:
        return bool(multihost_utils.reached_preemption_sync_point(step))
      except RuntimeError:
        return False
    return self.requested

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False


def _check_run_dir(run_dir: ckpt_lib.RunDir, plain: dict, overwrite: bool) -> None:
  if not run_dir.config.exists():
    return
  if run_dir.finished():
    if not overwrite:
      info = run_dir.info()
      same = not cfg_lib.differences(ckpt_lib.read_json(run_dir.config), plain)
      raise RunFinishedError(
          f"{run_dir.root} holds a finished run (step {info.get('step')}); refusing to overwrite "
          "it. Use another --workdir, or pass --config.overwrite=True to delete it and retrain.",
          step=info.get("step"), same_config=same)
    logging.warning("overwriting the finished run in %s (config.overwrite=True)", run_dir.root)
    run_dir.wipe()
    return
  diffs = cfg_lib.differences(ckpt_lib.read_json(run_dir.config), plain)
  if diffs:
    if not overwrite:
      raise ValueError(f"{run_dir.root} holds an unfinished run with a different config, so it "
                       "cannot be resumed: " + "; ".join(diffs) + ". Use another --workdir or "
                       "pass --config.overwrite=True to delete it.")
    run_dir.wipe()


# ----------------------------------------------------------------------------- train
@dataclasses.dataclass
class _Setup:
  """What train() decides before touching the checkpoints (phase 1)."""
  config: ml_collections.ConfigDict
  plain: dict
  run_dir: ckpt_lib.RunDir
  primary: bool
  model: Model
  source: Any
  mesh: jax.sharding.Mesh
  optimizer: Any
  schedule: Any
  abstract: Any
  layout: mesh_lib.Layout
  rule: Any   # data_lib.BatchRule, or windowed.WindowRule for stores beyond RAM
  rng: np.ndarray


def _devices(config) -> list:
  devices = jax.devices()
  if config.mesh.num_devices != -1:
    if config.mesh.num_devices > len(devices):
      raise ValueError(f"config.mesh.num_devices={config.mesh.num_devices} but only "
                       f"{len(devices)} devices exist")
    devices = devices[:config.mesh.num_devices]
  return devices


def _setup(config, workdir) -> _Setup:
  """Phase 1 (config already validated): open the data, check the workdir, lay the state out.

  The data are opened (integrity, NaN/Inf, shape) before the workdir check, so bad data never
  get an overwrite=True run wiped.
  """
  primary = jax.process_index() == 0
  run_dir = ckpt_lib.RunDir(workdir)
  plain = cfg_lib.to_plain(config)
  model = build_model(config.model, config.steps)
  source = data_lib.open_source(config.data, model.d)      # integrity, NaN/Inf, shape errors
  _check_run_dir(run_dir, plain, bool(config.overwrite))   # only now may a run be wiped
  _barrier("csae_trainer_checked_workdir")   # process 0 may have wiped an overwritten run
  mesh = mesh_lib.make_mesh(config.mesh.data, config.mesh.model, _devices(config))
  if config.batch_size % mesh.shape["data"]:
    raise ValueError(f"config.batch_size={config.batch_size} is not divisible by the data axis "
                     f"of the mesh ({mesh.shape['data']} devices)")
  optimizer, schedule = _make_optimizer(model, config)
  abstract = _abstract_state(model, optimizer, model.d)
  layout = mesh_lib.state_layout(mesh, abstract, bool(config.mesh.shard_opt_state),
                                 model.latent_axes())
  rule = data_lib.make_rule(source, config.batch_size, config.seed)
  rng = np.asarray(jax.random.key_data(jax.random.PRNGKey(config.seed)))
  return _Setup(config, plain, run_dir, primary, model, source, mesh, optimizer, schedule,
                abstract, layout, rule, rng)


def _restore_or_init(s: _Setup, mngr) -> tuple[Any, float, int]:
  """Phase 2: (train state, input scale, first step) of the latest checkpoint, or of a new run.

  A new run's input scale comes from the config or is estimated from the data (SPEC 1); its
  state is initialised from config.seed and the first batch.
  """
  config = s.config
  latest = mngr.latest_step()
  if latest is not None:
    target = {"train_state": _with_shardings(s.abstract, s.layout.state),
              "rng": jax.ShapeDtypeStruct(s.rng.shape, s.rng.dtype, sharding=s.layout.replicated)}
    restored, meta = ckpt_lib.restore(mngr, latest, target)
    data_lib.check_fingerprint(meta.get("data_fingerprint"), s.source.fingerprint,
                               s.run_dir.root)
    shuffle = data_lib.shuffle_kind(s.source)
    if meta.get("shuffle", "global") != shuffle:
      raise ValueError(
          f"cannot resume {s.run_dir.root}: its batches were drawn with shuffle "
          f"{meta.get('shuffle', 'global')!r}, now it would be {shuffle!r} (config.data.shuffle, "
          "host_cache_bytes or window_bytes changed); restore them or start a new workdir")
    ts = restored["train_state"]
    start = int(_host(ts.step))
    logging.info("resuming %s from step %d", s.run_dir.root, start)
    return ts, float(meta["input_scale"]), start
  if config.data.input_scale is not None:
    input_scale = float(config.data.input_scale)
  else:
    input_scale = data_lib.estimate_scale(s.source, config.seed, config.batch_size,
                                          config.data.scale_batches, config.data.scale_max_tokens)
  x0 = s.source.read_rows(s.rule.indices(0)) / np.float32(input_scale)
  init_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0)
  local = jax.jit(lambda k, x: step_lib.init_train_state(s.model, s.optimizer, k, x))(init_key, x0)
  ts = _to_global(jax.device_get(local), s.layout.state)
  logging.info("new run in %s: input scale %.6g from %s", s.run_dir.root, input_scale,
               s.source.description)
  return ts, input_scale, 0


def _step_function(s: _Setup, input_scale: float):
  """Phase 3: the compiled step as fn(train state, batch) -> (train state, metrics).

  With config.data.device_resident the tokens are copied to every device once and the batch is
  the int32 indices of its rows.
  """
  resident = bool(s.config.data.device_resident)
  compiled = make_step(s.model, s.optimizer, s.schedule, input_scale, s.layout,
                       bool(s.config.mesh.split_level2), resident)
  if not resident:
    return compiled
  tokens_on_devices = data_lib.device_tokens(s.source, s.layout.replicated,
                                             int(s.config.data.device_max_bytes))

  def gather_step(ts, idx):
    return compiled(ts, tokens_on_devices, idx)
  return gather_step


class _Checkpoints:
  """Phase 4, the loop's guards: the finiteness check and the checkpoint writes (`saved`)."""

  def __init__(self, s: _Setup, mngr, meta: dict):
    self.s = s
    self.mngr = mngr
    self.meta = meta
    self.saved: list[int] = []

  def check(self, pending) -> None:
    """Raises TrainingDiverged (and writes diverged.json) if step `pending` lost finiteness."""
    step_done, m = pending
    loss = float(_host(m["loss"]))
    if np.isfinite(loss) and np.isfinite(float(_host(m["grad_norm"]))):
      return
    run_dir = self.s.run_dir
    good = self.mngr.latest_step()
    vals = {k: float(_host(v)) for k, v in m.items()}
    if self.s.primary:
      ckpt_lib.write_json_atomic(run_dir.root / "diverged.json",
                                 {"step": step_done, "metrics": {k: str(v) for k, v in vals.items()},
                                  "last_good_checkpoint": good})
    kept = (f"the last good checkpoint is step {good} in {run_dir.checkpoints}" if good is not None
            else "no checkpoint was written before it")
    raise TrainingDiverged(
        f"the loss is {loss} at step {step_done} (metrics: "
        + ", ".join(f"{k}={v:.4g}" for k, v in sorted(vals.items()))
        + f"). Stopped; {kept}. Lower config.lr, check the data (non-finite or extreme "
        "activations), or the input scale.")

  def save(self, step: int, ts) -> None:
    if not bool(_host(_all_finite(ts.params))):   # never checkpoint a state that overflowed
      raise TrainingDiverged(
          f"the parameters after step {step} hold NaN/Inf although the loss was finite (an "
          f"update overflowed). Stopped without saving them; the latest checkpoint (step "
          f"{self.mngr.latest_step()}) in {self.s.run_dir.checkpoints} is kept. Lower config.lr.")
    ckpt_lib.save(self.mngr, step,
                  {"train_state": ts, "rng": _to_global(self.s.rng, self.s.layout.replicated)},
                  dict(self.meta, step=step))
    self.saved.append(step)


def _run_steps(s: _Setup, ts, start: int, step_fn, ckpts: _Checkpoints):
  """Phase 5, the loop: steps start..config.steps with logging, checkpoints and preemption.

  Finiteness is checked one step behind (the device queue stays full), and at every log or
  checkpoint step. Returns (train state, last logged metrics, preempted).
  """
  config, primary = s.config, s.primary
  resident = bool(config.data.device_resident)
  writer = metrics_lib.MetricWriter(s.run_dir.metrics, s.run_dir.tensorboard, start,
                                    enabled=primary, config=s.plain)
  progress = metrics_lib.Progress(config.steps, start, config.batch_size, config.progress,
                                  enabled=primary)
  batches = data_lib.Batches(s.source, s.rule,
                             s.layout.batch_indices if resident else s.layout.batch,
                             start, config.steps, config.data.prefetch, indices_only=resident)
  last_metrics: dict[str, float] = {}
  preempted = False
  pending = None
  t_log, step_log = time.time(), start
  try:
    with _Preemption() as preemption:
      for step in range(start, config.steps):
        ts, m = step_fn(ts, batches.get(step))
        if pending is not None:
          ckpts.check(pending)    # one step behind, so the device queue stays full
        pending = (step + 1, m)
        done = step + 1
        stop = preemption.check(done)
        log_now = done % config.log_every == 0 or done == config.steps
        save_now = done % config.checkpoint_every == 0 or done == config.steps or stop
        if log_now or save_now:
          ckpts.check(pending)
        if log_now:
          vals = {k: float(_host(v)) for k, v in m.items()}
          dt = time.time() - t_log
          vals["tokens_per_s"] = (done - step_log) * config.batch_size / max(dt, 1e-9)
          vals["steps_per_s"] = (done - step_log) / max(dt, 1e-9)
          t_log, step_log = time.time(), done
          writer.write(done, vals)
          last_metrics = vals
          progress.update(done, vals, force_log=True)
        elif primary and progress.interactive:
          progress.update(done)
        if save_now:
          ckpts.save(done, ts)
        if stop:
          preempted = True
          logging.warning("stopped at step %d on request; checkpoint saved", done)
          break
      if pending is not None:
        ckpts.check(pending)
  finally:
    batches.close()
    ckpt_lib.wait(ckpts.mngr)
    writer.close()
    progress.close()
  return ts, last_metrics, preempted


def _finish(s: _Setup, ckpts: _Checkpoints, ts, start: int, input_scale: float,
            last_metrics: dict, preempted: bool, t_start: float) -> TrainResult:
  """Phase 6: the final checkpoint and run_info.json (unless preempted), then the report."""
  mngr = ckpts.mngr
  final_step = int(_host(ts.step))
  if not preempted and mngr.latest_step() != final_step:
    ckpts.save(final_step, ts)
    ckpt_lib.wait(mngr)
  if s.primary and not preempted:
    ckpt_lib.write_json_atomic(s.run_dir.run_info, {
        "finished": final_step >= s.config.steps, "step": final_step, "input_scale": input_scale,
        "elapsed_s": time.time() - t_start})
  mngr.close()
  memory = {"params": mesh_lib.per_device_bytes(ts.params),
            "opt_state": mesh_lib.per_device_bytes(ts.opt_state),
            "params_global": mesh_lib.global_bytes(ts.params),
            "opt_state_global": mesh_lib.global_bytes(ts.opt_state)}
  elapsed = time.time() - t_start
  tok = (final_step - start) * s.config.batch_size / max(elapsed, 1e-9)
  return TrainResult(str(s.run_dir.root), final_step, last_metrics, input_scale, preempted,
                     elapsed, tok, ckpts.saved, memory)


def train(config, workdir) -> TrainResult:
  """Trains (or resumes) the run in `workdir`; see csae_jax/trainer/config.py for the keys.

  The config is validated before anything is written; process 0 then holds the workdir's lock
  (csae_jax/locks.py) for the whole run, so a second trainer on the same workdir is refused.
  Phases: set up (data, workdir, mesh) -> restore or initialise -> compile the step -> run the
  steps (checks, logs, checkpoints, preemption) -> final checkpoint and report.
  """
  config = cfg_lib.complete(config)
  data_lib.fill_model_d(config)   # d from the store manifest when the config leaves it unset
  cfg_lib.validate(config)
  multihost.initialize_from_config(config)
  if jax.process_index() != 0:
    return _train(config, workdir)
  root = pathlib.Path(workdir)
  created = not root.exists()
  try:
    with locks.workdir_lock(root):
      return _train(config, workdir)
  except BaseException:
    if created and root.is_dir() and not any(root.iterdir()):
      root.rmdir()     # refused before writing anything: leave no empty workdir behind
    raise


def _train(config, workdir) -> TrainResult:
  t_start = time.time()
  s = _setup(config, workdir)
  if s.primary:
    ckpt_lib.write_json_atomic(s.run_dir.config, s.plain)
  _barrier("csae_trainer_wrote_config")
  mngr = ckpt_lib.manager(s.run_dir, s.config.keep)
  ts, input_scale, start = _restore_or_init(s, mngr)
  meta = {"input_scale": input_scale, "config": s.plain, "data": s.source.description,
          "data_fingerprint": s.source.fingerprint,
          "num_tokens": s.source.num_tokens, "process_count": jax.process_count(),
          "mesh": dict(s.mesh.shape), "shuffle": data_lib.shuffle_kind(s.source)}
  ckpts = _Checkpoints(s, mngr, meta)
  step_fn = _step_function(s, input_scale)
  ts, last_metrics, preempted = _run_steps(s, ts, start, step_fn, ckpts)
  return _finish(s, ckpts, ts, start, input_scale, last_metrics, preempted, t_start)


# ----------------------------------------------------------------------------- load
def load_run(workdir, step: int | None = None, with_opt_state: bool = False) -> Run:
  """The run in `workdir` at `step` (default: the latest checkpoint), on the first local device."""
  run_dir = ckpt_lib.RunDir(workdir)
  if not run_dir.config.exists():
    raise FileNotFoundError(f"{run_dir.root} holds no run (no config.json); train one with "
                            "python -m launch.train --workdir=...")
  config = cfg_lib.from_json(run_dir.config.read_text())
  model = build_model(config.model, config.steps)
  mngr = ckpt_lib.manager(run_dir, config.keep, read_only=True)
  steps = sorted(mngr.all_steps())
  if not steps:
    raise FileNotFoundError(f"{run_dir.checkpoints} holds no checkpoint yet")
  if step is None:
    step = steps[-1]
  elif step not in steps:
    raise ValueError(f"no checkpoint at step {step} in {run_dir.checkpoints}; available: {steps}")
  optimizer, _ = _make_optimizer(model, config)
  abstract = _abstract_state(model, optimizer, model.d)
  dev = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = {"train_state": _with_shardings(abstract, jax.tree_util.tree_map(lambda _: dev,
                                                                             abstract)),
            "rng": jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=dev)}
  restored, meta = ckpt_lib.restore(mngr, step, target)
  mngr.close()
  ts = restored["train_state"]
  return Run(config=config, model=model, params=ts.params, model_state=ts.model_state,
             step=int(ts.step), input_scale=float(meta["input_scale"]), workdir=str(run_dir.root),
             finished=run_dir.finished() and step == steps[-1],
             opt_state=ts.opt_state if with_opt_state else None)

