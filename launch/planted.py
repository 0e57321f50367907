r"""Train a cascade on the planted hierarchy and report how much of the truth it recovered.

  .venv/bin/python -m launch.planted --config=configs/planted_csae.py --workdir=runs/planted

Writes <workdir>/report.json (figures), <workdir>/hierarchy.json (every Level-2 unit with its
children) and <workdir>/metrics.jsonl; prints progress and a summary.
"""
from __future__ import annotations

import json
import os
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

from csae_jax import planted_job

_CONFIG = config_flags.DEFINE_config_file("config", "configs/planted_csae.py", "Job config.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/planted", "Output directory.")


def main(argv):
  del argv
  t0 = time.time()

  def log(step, m):
    keys = ("loss", "l1/fvu", "l1/l0", "l1/dead_fraction", "l2/fvu", "l2/live_atoms")
    shown = " ".join(f"{k}={m[k]:.4g}" for k in keys if k in m)
    print(f"step {step:6d}  {shown}  tok/s={m['tokens_per_s']:.3g}  {time.time() - t0:.0f}s",
          flush=True)

  report = planted_job.run(_CONFIG.value, _WORKDIR.value, log_fn=log)
  print(json.dumps(report["summary"], indent=2))
  print(f"wrote {os.path.join(_WORKDIR.value, 'report.json')}")


if __name__ == "__main__":
  sys.exit(app.run(main))
