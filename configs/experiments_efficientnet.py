"""Every method on EfficientNet-lite0 activations (real ImageNet weights, offline), with spliced-
model fidelity per method (issue 12, item 5; docs/release_faithful.md):

  python -m bridge_torch.fidelity_experiment --workdir=/tmp/exp_effnet

Stores of one block's output (tokens = spatial positions, d = channels) are built from crops of
scikit-image's photos and procedural scenes under <workdir>/data; reference embeddings for HMS are
EfficientNet's own pooled features. Tables: <workdir>/tables (fidelity.md beside table1_2.md).
"""
import ml_collections

from configs import experiments_planted


def _planted_config():
  """The planted grid's small-run family settings (thresholds from step 50, penalties)."""
  return experiments_planted.get_config()


def get_config():
  c = _planted_config()
  c.data.kind = "store"            # paths are filled in by bridge_torch.fidelity_experiment
  c.data.planted = ml_collections.ConfigDict()
  c.n1, c.n2, c.k1, c.k2 = 256, 32, 8, 1
  c.steps = 600
  c.checkpoint_every = 600
  c.log_every = 100
  c.csae.cascade.level_start_steps = (150,)
  c.report.browser = False
  c.fidelity = ml_collections.ConfigDict(dict(
      layer="_blocks.15",            # 320 channels, 4 x 4 tokens at 128 px
      image_size=128,
      train_crops_per_photo=16, train_scenes=48,
      eval_crops_per_photo=4, eval_scenes=16,
      encoding="threshold",          # per-token inference encoding when spliced (batch: BatchTopK
                                     # over the forward batch's tokens)
      seed=0))
  return c
