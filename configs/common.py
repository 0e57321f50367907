"""Constants and building blocks the config files share (big_vision style: the values live here,
in configs/, not in the trainer).

Paper constants (SPEC 3, SPEC 6, paper E.1): every method is trained at a Level-1 size of 20000
and a Level-2 size of 10000 atoms; the authors' release uses k1 = 6, k2 = 1, 1024 tokens per batch
and 500M tokens.
"""
from __future__ import annotations

import ml_collections

from csae_jax.trainer.config import base_config

PAPER_N = {"l1": 20_000, "l2": 10_000}   # Level-1 / Level-2 sizes for every method (paper E.1)
PAPER_K = {"l1": 6, "l2": 1}             # the release's k1, k2 (SPEC 3)
PAPER_TOKENS = 500_000_000               # tokens per run (SPEC 3)
PAPER_BATCH = 1024                       # tokens per batch (SPEC 3)
QWEN3VL_D = 1024                         # Qwen3-VL-4B vision block 23 (SPEC 6)
GEMMA3_D = 1152                          # Gemma-3-4B-IT vision layer 26
LLAVA_D = 5120                           # LLaVA-1.5-13B language layer 39


def paper_run(c: ml_collections.ConfigDict) -> None:
  """The release's run length and batch: 1024 tokens per batch, 500M tokens (SPEC 3)."""
  c.batch_size = PAPER_BATCH
  c.steps = PAPER_TOKENS // PAPER_BATCH
  c.warmup_steps = 1000
  c.checkpoint_every = 5000
  c.log_every = 500
  c.data.kind = "store"


def tiny_planted(steps: int) -> ml_collections.ConfigDict:
  """base_config() with a seconds-long run on a small planted hierarchy (d=16): for tests and
  smoke runs; the caller sets config.model."""
  c = base_config()
  c.model.d = 16
  c.steps = steps
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
