"""Train, evaluate and tabulate every method of the paper on one store (or the planted hierarchy).

  python -m launch.experiments --config=configs/experiments_planted.py --workdir=/tmp/exp_planted
  python -m launch.experiments --config=configs/experiments_store.py \
      --config.data.path=STORE --config.data.eval_path=EVAL_STORE --workdir=DIR

Resumable: trained runs (<workdir>/runs/*) and evaluations (<workdir>/results/*) that are finished
are reused. Tables in <workdir>/tables, plots in <workdir>/plots, browsers in <workdir>/browser.
"""
import os


from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from launch import common
from csae_jax.evaluation import experiments

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config (configs/experiments_*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Experiment directory (runs, results, tables).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  common.announce_jax("experiments")
  from csae_jax.trainer import metrics as metrics_lib
  metrics_lib.quiet_library_logs()
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)   # orbax logs every checkpoint step at INFO
  out = experiments.run_experiment(_CONFIG.value, _WORKDIR.value)
  for name in ("table1_2", "table4", "recovery"):
    path = os.path.join(_WORKDIR.value, "tables", name + ".md")
    if os.path.exists(path):
      with open(path) as f:
        print(f.read())
  logging.info("results in %s", out["workdir"])


def cli():
  """Console-script entry point (csae-experiments, setup.py)."""
  app.run(main)


if __name__ == "__main__":
  cli()
