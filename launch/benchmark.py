"""Hierarchy benchmark: every method x regime x seed against ground-truth files.

  python -m launch.benchmark --config=configs/benchmark_hierarchy.py --workdir=/tmp/bench_h
  python -m launch.benchmark --config=configs/benchmark_hierarchy.py --workdir=DIR \
      --config.regimes=hard --config.seeds=0 --config.methods=csae_full,pair

Writes <workdir>/tables/benchmark.{md,csv} (mean +- sd over seeds) and plots/benchmark.png.
Finished (regime, seed) results are reused by a rerun with the same config.
"""
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from csae_jax.benchmarks import suite
from launch import common

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/benchmark_hierarchy.py",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Benchmark directory (data, results, tables).")
flags.mark_flags_as_required(["config", "workdir"])


def _say(msg):
  logging.info(msg)
  print(msg, flush=True)


def main(argv):
  del argv
  common.announce_jax("benchmark")
  out = suite.run_suite(_CONFIG.value, _WORKDIR.value, log=_say)
  print(out["table"])


def cli():
  app.run(main)


if __name__ == "__main__":
  cli()
