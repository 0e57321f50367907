"""Tiny two-level CSAE on a small planted hierarchy: seconds on a laptop CPU (tests, smoke runs).

  python launch/train.py --config=configs/tiny_csae.py --workdir=/tmp/tiny_csae
"""
from csae_jax.trainer.config import tiny_planted


def get_config():
  c = tiny_planted(steps=60)
  c.model.name = "cascade"
  c.model.levels = [dict(family="batchtopk", n=32, k=3, aux_k=None, threshold_start=10),
                    dict(family="batchtopk", n=8, k=1, aux_k=None, threshold_start=10)]
  c.model.cascade = dict(k_anneal_frac=0.1)
  return c
