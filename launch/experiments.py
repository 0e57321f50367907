"""Train, evaluate and tabulate every method of the paper on one store (or the planted hierarchy).

  python launch/experiments.py --config=configs/experiments_planted.py --workdir=/tmp/exp_planted
  python launch/experiments.py --config=configs/experiments_store.py \
      --config.data.path=STORE --config.data.eval_path=EVAL_STORE --workdir=DIR

Resumable: trained runs (<workdir>/runs/*) and evaluations (<workdir>/results/*) that are finished
are reused. Tables in <workdir>/tables, plots in <workdir>/plots, browsers in <workdir>/browser.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from csae_jax.evaluation import experiments  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config (configs/experiments_*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Experiment directory (runs, results, tables).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)   # orbax logs every checkpoint step at INFO
  out = experiments.run_experiment(_CONFIG.value, _WORKDIR.value)
  for name in ("table1_2", "table4", "recovery"):
    path = os.path.join(_WORKDIR.value, "tables", name + ".md")
    if os.path.exists(path):
      with open(path) as f:
        print(f.read())
  logging.info("results in %s", out["workdir"])


if __name__ == "__main__":
  app.run(main)
