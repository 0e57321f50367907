"""The tutorial's CSAE (README, "Tutorial"): a tiny two-level cascade on the tutorial's store.

  python -m launch.train --config=configs/tutorial_train.py \
      --config.data.path=/tmp/csae_tutorial/store --workdir=/tmp/csae_tutorial/run

d is read from the store's manifest (no --config.model.d). Level 1: BatchTopK n1 = 24, k1 = 3;
Level 2: BatchTopK n2 = 4, k2 = 1 from step 40 (alpha 0.02, as on the planted hierarchy: see
configs/planted_csae.py). Lists are tuples, so they are flags too:
--config.model.cascade.alphas='(0.1,)' --config.model.cascade.level_start_steps='(20,)'.
Expected (seed 0, 200 steps, about 10 s on 2 CPU cores): final l1/fvu below 0.5, l1/l0 = 3.
"""
import ml_collections

from configs.common import base_config


def get_config():
  c = base_config()
  c.model.name = "cascade"                 # model.d: from the store manifest
  c.model.levels = (dict(family="batchtopk", n=24, k=3, aux_k=None, threshold_start=20),
                    dict(family="batchtopk", n=4, k=1, aux_k=None, threshold_start=20))
  c.model.cascade = ml_collections.ConfigDict(dict(
      alphas=(0.02,), level_start_steps=(40,), stop_gradient="full", k_anneal_frac=0.1))
  c.steps, c.batch_size, c.lr, c.warmup_steps = 200, 128, 3e-3, 10
  c.checkpoint_every, c.keep, c.log_every = 100, 1, 50
  c.data.kind = "store"
  c.data.path = ""                         # --config.data.path=<the tutorial's store>
  c.data.scale_batches = 4
  return c
