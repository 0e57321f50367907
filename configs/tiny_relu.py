"""Tiny ReLU-L1 SAE on a small planted hierarchy (tests, smoke runs; seconds on a CPU).

  python launch/train.py --config=configs/tiny_relu.py --workdir=/tmp/tiny_relu
"""
from csae_jax.trainer.config import tiny_planted


def get_config():
  c = tiny_planted(steps=40)
  c.model.name = "relu"
  c.model.options = dict(n=64, l1_coef=0.05, sparsity_warmup=10)
  return c
