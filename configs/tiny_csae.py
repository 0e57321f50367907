"""Tiny two-level CSAE on a small planted hierarchy: seconds on a laptop CPU (tests, smoke runs).

  python launch/train.py --config=configs/tiny_csae.py --workdir=/tmp/tiny_csae
"""
from csae_jax.trainer.config import base_config


def get_config():
  c = base_config()
  c.model.name = "cascade"
  c.model.d = 16
  c.model.levels = [dict(family="batchtopk", n=32, k=3, aux_k=None, threshold_start=10),
                    dict(family="batchtopk", n=8, k=1, aux_k=None, threshold_start=10)]
  c.model.cascade = dict(k_anneal_frac=0.1)
  c.steps = 60
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
