"""Tiny ReLU-L1 SAE on a small planted hierarchy (tests, smoke runs; seconds on a CPU).

  python launch/train.py --config=configs/tiny_relu.py --workdir=/tmp/tiny_relu
"""
from csae_jax.trainer.config import base_config


def get_config():
  c = base_config()
  c.model.name = "relu"
  c.model.d = 16
  c.model.options = dict(n=64, l1_coef=0.05, sparsity_warmup=10)
  c.steps = 40
  c.batch_size = 64
  c.lr = 3e-3
  c.warmup_steps = 5
  c.checkpoint_every = 20
  c.keep = 2
  c.log_every = 10
  c.data.kind = "planted"
  c.data.planted = dict(d=16, n_parents=4, children_per_parent=3, n_images=40,
                        tokens_per_image=16, embed_dim=8, seed=0)
  c.data.scale_batches = 4
  return c
