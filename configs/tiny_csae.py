"""Tiny two-level CSAE on a small planted hierarchy: seconds on a laptop CPU (tests, smoke runs).

  python -m launch.train --config=configs/tiny_csae.py --workdir=/tmp/tiny_csae

Expected (seed 0, 60 steps, a few seconds): final l1/fvu about 0.24, l2/fvu about 0.40, l1/l0 3.
"""
import ml_collections

from configs.common import tiny_planted


def get_config():
  c = tiny_planted(steps=60)
  c.model.name = "cascade"
  c.model.levels = (dict(family="batchtopk", n=32, k=3, aux_k=None, threshold_start=10),
                    dict(family="batchtopk", n=8, k=1, aux_k=None, threshold_start=10))
  c.model.cascade = ml_collections.ConfigDict(dict(
      k_anneal_frac=0.1, alphas=(0.1,), coupling="ratio", level_start_steps=(0,)))
  return c
