"""Train (or resume) one SAE / CSAE run: checkpoints, metrics and the config land in --workdir.

  python -m launch.train --config=configs/csae_release.py --workdir=runs/csae \
      --config.data.path=stores/qwen3vl_imagenet_train --config.steps=20000

Rerunning the same command resumes from the latest checkpoint, and once the run is finished
prints "finished at step N: nothing to do" and exits 0; a finished run is never overwritten unless
--config.overwrite=True. User errors (bad config, bad data, a locked workdir) print one line and
exit 2. Multi-host: run one process per host with the same
flags (SLURM and TPU pods are detected; see launch/slurm_train.sbatch) or pass --coordinator,
--num_processes and --process_id. Exit status 143 means stopped by SIGTERM after checkpointing.
"""
from __future__ import annotations

import sys


from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from csae_jax import allocator
from launch import common

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).",
                                          lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, config).")
_COORDINATOR = flags.DEFINE_string("coordinator", "", "host:port of process 0 (multi-host).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Number of processes (multi-host).")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "This process's index (multi-host).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  from csae_jax import cli
  from csae_jax.trainer import RunFinishedError
  try:
    with cli.user_errors_exit("train"):
      _main(argv)
  except RunFinishedError as e:
    if not e.same_config:
      print(f"train: {cli.one_line(e)}", file=sys.stderr)
      sys.exit(cli.EXIT_USER_ERROR)
    print(f"finished at step {e.step}: nothing to do")


def _main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from csae_jax import trainer
  from csae_jax.trainer import metrics as metrics_lib
  from csae_jax.trainer import multihost
  metrics_lib.quiet_library_logs()
  from csae_jax.trainer import config as cfg_lib
  raw = _CONFIG.value
  if type(raw).__name__ == "_ErrorConfig":   # config_flags defers a failed load to first use
    raise FileNotFoundError(f"--config could not be loaded: {raw._error}")
  config = cfg_lib.complete(raw)
  if _COORDINATOR.value or _NUM_PROCESSES.value or _PROCESS_ID.value >= 0:
    config.distributed.coordinator = _COORDINATOR.value
    config.distributed.num_processes = _NUM_PROCESSES.value
    config.distributed.process_id = _PROCESS_ID.value
  multihost.initialize_from_config(config)
  common.announce_jax("train")
  from csae_jax.trainer import checkpoint as ckpt_lib
  ckpt_lib.silence_library_echoes()   # a failed async save must read as one line (issue 10)
  result = trainer.train(config, _WORKDIR.value)
  logging.info("done: step %d, %.0f tokens/s, checkpoints %s", result.step, result.tokens_per_s,
               result.checkpoint_steps)
  if result.preempted:
    sys.exit(143)


def cli():
  """Console-script entry point (csae-train, setup.py)."""
  allocator.reexec_with_jemalloc()   # docs/speed.md: allocator
  app.run(main)


if __name__ == "__main__":
  cli()
