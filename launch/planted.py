r"""Train a cascade on the planted hierarchy and report how much of the truth it recovered.

  .venv/bin/python -m launch.planted --config=configs/planted_csae.py --workdir=runs/planted

Trains with csae_jax.trainer (checkpoints, resume, metrics.jsonl, TensorBoard events in the
workdir), then writes <workdir>/report.json (figures) and <workdir>/hierarchy.json (every Level-2
unit with its children) and prints a summary. Re-running resumes; a finished run needs
--config.overwrite=True.
"""
from __future__ import annotations

import json
import os

from absl import app
from absl import flags
from ml_collections import config_flags

from csae_jax import allocator
from launch import common
from launch import planted_job

_CONFIG = config_flags.DEFINE_config_file("config", "configs/planted_csae.py", "Job config.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/planted", "Output directory.")


def main(argv):
  del argv
  common.announce_jax("planted")
  from csae_jax.trainer import metrics as metrics_lib
  metrics_lib.quiet_library_logs()
  report = planted_job.run(_CONFIG.value, _WORKDIR.value)
  print(json.dumps(report["summary"], indent=2))
  print(f"wrote {os.path.join(_WORKDIR.value, 'report.json')} and hierarchy.json; checkpoints, "
        "metrics.jsonl and TensorBoard events are in the same directory")


def cli():
  """Console-script entry point (csae-planted, setup.py)."""
  allocator.reexec_with_jemalloc()   # docs/speed.md: allocator
  app.run(main)


if __name__ == "__main__":
  cli()
