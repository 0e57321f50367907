"""Orbax checkpoints of a run: <workdir>/checkpoints/<step>/{state, meta}.

`state` holds the TrainState (step, params, model state with thresholds and counters, optimizer
state) and the RNG key data; `meta` (JSON) the input scale, the config and the data description.
Orbax writes each step into a temporary directory and renames it when complete, so a run killed
while saving resumes from the previous step. <workdir>/run.json records whether the run finished.
Every step's meta also holds sha256 checksums of the state's arrays, checked on every restore
(docs/reliability.md).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging as logging_std
import pathlib
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp

from csae_jax import fileio


def write_json_atomic(path: pathlib.Path, obj) -> None:
  fileio.write_json_atomic(path, obj)


def read_json(path: pathlib.Path):
  with open(path) as f:
    return json.load(f)


class RunDir:
  """Paths of a work directory."""

  def __init__(self, workdir):
    self.root = pathlib.Path(workdir).absolute()
    self.checkpoints = self.root / "checkpoints"
    self.config = self.root / "config.json"
    self.run_info = self.root / "run.json"
    self.metrics = self.root / "metrics.jsonl"
    self.tensorboard = self.root / "tensorboard"

  def info(self) -> dict:
    return read_json(self.run_info) if self.run_info.exists() else {}

  def finished(self) -> bool:
    return bool(self.info().get("finished"))

  def wipe(self) -> None:
    """Remove what a previous run wrote (only the trainer's own files)."""
    if jax.process_index() != 0:
      return
    for p in (self.checkpoints, self.tensorboard):
      if p.exists():
        shutil.rmtree(p)
    for p in (self.config, self.run_info, self.metrics, self.root / "diverged.json"):
      if p.exists():
        p.unlink()


class _ReadOnlyNotices(logging_std.Filter):
  """Orbax warns three times per read-only manager that it is read-only (what we asked for)."""

  def filter(self, record):
    msg = record.getMessage()
    return not ("/orbax/" in record.pathname and ("read_only=True" in msg or "read only" in msg))


@contextlib.contextmanager
def _quiet_read_only_notices():
  flt = _ReadOnlyNotices()
  loggers = [logging_std.getLogger("absl"), logging_std.getLogger()]
  handlers = [h for lg in loggers for h in lg.handlers]
  for obj in loggers + handlers:
    obj.addFilter(flt)
  try:
    yield
  finally:
    for obj in loggers + handlers:
      obj.removeFilter(flt)


def manager(run_dir: RunDir, keep: int, read_only: bool = False) -> ocp.CheckpointManager:
  quiet = _quiet_read_only_notices() if read_only else contextlib.nullcontext()
  with quiet:   # loading a run for evaluation / export is not news
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=not read_only, read_only=read_only,
        cleanup_tmp_directories=not read_only, enable_async_checkpointing=not read_only)
    return ocp.CheckpointManager(run_dir.checkpoints, options=options, item_names=("state", "meta"))


class CheckpointCorrupted(ValueError):
  """A checkpoint's arrays do not match the checksums saved with it."""


def state_checksums(state) -> dict[str, str] | None:
  """sha256 of every leaf's dtype, shape and bytes, keyed by its tree path.

  Saved in the step's `meta` (committed by the same Orbax rename as the arrays) and compared after
  every restore, so flipped bytes in an array file can never load silently. None when the state
  is spread over several processes (no process sees every value; multi-host runs rely on Orbax).
  """
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  if any(isinstance(x, jax.Array) and not x.is_fully_addressable for _, x in leaves):
    return None
  out = {}
  for path, x in leaves:
    a = np.ascontiguousarray(np.asarray(jax.device_get(x)))
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.view(np.uint8).reshape(-1).data if a.size else b"")
    out[jax.tree_util.keystr(path)] = h.hexdigest()
  return out


def save(mngr: ocp.CheckpointManager, step: int, state: dict, meta: dict) -> None:
  """Starts an (asynchronous) save; a full disk here or in `wait` raises DiskFullError."""
  meta = dict(meta, checksums=state_checksums(state))
  with _disk_full_is_one_error(mngr, step):
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                            meta=ocp.args.JsonSave(meta)), force=True)


def wait(mngr: ocp.CheckpointManager) -> None:
  """Waits for the pending save; a full disk becomes one DiskFullError and no temp directory."""
  with _disk_full_is_one_error(mngr, None):
    mngr.wait_until_finished()


def _is_echo(exc) -> bool:
  """An error Orbax's or tensorstore's writer threads raise again after a failed save."""
  return fileio.is_disk_full(exc) or (isinstance(exc, RuntimeError)
                                      and "Event loop is closed" in str(exc))


def silence_library_echoes() -> None:
  """Drop the echoes of a failed asynchronous save from library threads and callbacks.

  Installed by launch.train at start and by the disk-full path. Orbax's asyncio writer tasks and
  tensorstore's callbacks fail again after a save was abandoned ("Event loop is closed", the same ENOSPC) and print tracebacks through
  sys.excepthook, threading.excepthook or sys.unraisablehook, burying the one line that says
  what to do. Other exceptions still reach the previous hooks.
  """
  import sys
  import threading
  if getattr(sys.excepthook, "_csae_echo_filter", False):
    return
  prev_sys, prev_thread, prev_unraisable = sys.excepthook, threading.excepthook, \
      sys.unraisablehook

  def sys_hook(kind, exc, tb):
    if not _is_echo(exc):
      prev_sys(kind, exc, tb)

  def thread_hook(args):
    if not _is_echo(args.exc_value):
      prev_thread(args)

  def unraisable_hook(args):
    if not _is_echo(args.exc_value):
      prev_unraisable(args)

  sys_hook._csae_echo_filter = True
  sys.excepthook, threading.excepthook, sys.unraisablehook = sys_hook, thread_hook, \
      unraisable_hook


@contextlib.contextmanager
def _disk_full_is_one_error(mngr, step):
  try:
    yield
  except Exception as e:
    if not fileio.is_disk_full(e):
      raise
    root = pathlib.Path(mngr.directory)
    for tmp in root.glob("*.orbax-checkpoint-tmp*"):   # the unfinished step: no litter
      shutil.rmtree(tmp, ignore_errors=True)
    kept = [s for s in mngr.all_steps() if (root / str(s)).is_dir()]
    silence_library_echoes()
    raise fileio.DiskFullError(
        28, f"no space left on the device while writing a checkpoint in {root}; the unfinished "
        f"checkpoint was removed, the complete ones ({kept or 'none'}) are intact. Free space "
        "and rerun the same command to resume.") from None


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state: dict):
  """(state, meta) at `step`, checked against its checksums; arrays land with the shardings of
  `abstract_state`. Raises CheckpointCorrupted naming the step directory."""
  where = pathlib.Path(mngr.directory) / str(step)
  try:
    out = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
  except Exception as e:   # Orbax / tensorstore raise many types for damaged files
    raise CheckpointCorrupted(
        f"checkpoint {where} cannot be read ({type(e).__name__}: {' '.join(str(e).split())[:300]})"
        f"; {_advice(mngr, step)}") from e
  state, meta = out["state"], out["meta"]
  want = (meta or {}).get("checksums")
  if want is not None:
    got = state_checksums(state)
    if got is not None and got != want:
      bad = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
      raise CheckpointCorrupted(
          f"checkpoint {where} is corrupted: {len(bad)} array(s) differ from the checksums saved "
          f"with it ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); "
          f"{_advice(mngr, step)}")
  return state, meta


def _advice(mngr, step: int) -> str:
  earlier = [s for s in mngr.all_steps() if s < step]
  if earlier:
    return (f"delete {pathlib.Path(mngr.directory) / str(step)} to resume from step "
            f"{max(earlier)}, or restore it from a backup")
  return "restore it from a backup, or retrain (--config.overwrite=True)"


def restore_meta(mngr: ocp.CheckpointManager, step: int) -> dict:
  return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
