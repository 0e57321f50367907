"""Tiny ReLU-L1 SAE on a small planted hierarchy (tests, smoke runs; seconds on a CPU).

  python -m launch.train --config=configs/tiny_relu.py --workdir=/tmp/tiny_relu

Expected (seed 0, 40 steps, a few seconds): final l1/fvu about 0.16, l1/l0 about 17.
"""
from configs.common import tiny_planted


def get_config():
  c = tiny_planted(steps=40)
  c.model.name = "relu"
  c.model.options = dict(n=64, l1_coef=0.05, sparsity_warmup=10)
  return c
