"""Orbax checkpoints of a run: <workdir>/checkpoints/<step>/{state, meta}.

`state` holds the TrainState (step, params, model state with thresholds and counters, optimizer
state) and the RNG key data; `meta` (JSON) the input scale, the config and the data description.
Orbax writes each step into a temporary directory and renames it when complete, so a run killed
while saving resumes from the previous step. <workdir>/run.json records whether the run finished.
"""
from __future__ import annotations

import json
import pathlib
import shutil

import jax
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


def manager(run_dir: RunDir, keep: int, read_only: bool = False) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=not read_only, read_only=read_only,
      cleanup_tmp_directories=not read_only, enable_async_checkpointing=not read_only)
  return ocp.CheckpointManager(run_dir.checkpoints, options=options, item_names=("state", "meta"))


def save(mngr: ocp.CheckpointManager, step: int, state: dict, meta: dict) -> None:
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          meta=ocp.args.JsonSave(meta)), force=True)


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state: dict):
  """(state, meta) at `step`; arrays land with the shardings of `abstract_state`."""
  out = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                   meta=ocp.args.JsonRestore()))
  return out["state"], out["meta"]


def restore_meta(mngr: ocp.CheckpointManager, step: int) -> dict:
  return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
