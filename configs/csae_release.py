"""The authors' released CSAE run (SPEC 3): BatchTopK at both levels, n1 20000 (k1 6) and
n2 10000 (k2 1), no sparsity penalty, no AuxK, alpha 1, lr 1e-4, 1024 tokens per batch, 500M
tokens, Level 2 from step 10000 (b2 <- geometric median of the Level-1 atoms then), k of each
level annealed from d over the first 10% of steps, thresholds EMA after step 1000.

  python -m launch.train --config=configs/csae_release.py --workdir=runs/csae_release \
      --config.data.path=stores/qwen3vl_imagenet_train

Release-faithful: when no atom is live the release uses all atoms (empty_live=all; the paper
skips the Level-2 term). Evaluate such a run the release's way (docs/release_faithful.md) with the
experiments runner's --config.eval.release_faithful=True (4096-token chunks inside 16-image
batches, alive = top-20), steering's --config.steer.release_faithful=True (dense top images and
sigma_A), and `python -m bridge_torch.ae_import --release_faithful` for the authors' ae.pt (a
training config holds training keys only, so the evaluation switch lives in those configs).
Lists are tuples, so every one is a flag:
--config.model.cascade.alphas='(0.02,)' --config.model.cascade.level_start_steps='(500,)'.
Expected: not reproduced here (needs the 500M-token store); the planted analogue is
configs/planted_csae.py.
"""
import ml_collections

from configs.common import PAPER_K
from configs.common import PAPER_N
from configs.common import QWEN3VL_D
from configs.common import base_config
from configs.common import paper_run


def get_config():
  c = base_config()
  c.model.name = "cascade"
  c.model.d = QWEN3VL_D
  c.model.levels = (
      dict(family="batchtopk", n=PAPER_N["l1"], k=PAPER_K["l1"], aux_k=None),
      dict(family="batchtopk", n=PAPER_N["l2"], k=PAPER_K["l2"], aux_k=None),
  )
  # Raw alpha as released (SPEC 3); the project's own configs use coupling "ratio" instead.
  c.model.cascade = ml_collections.ConfigDict(dict(
      alphas=(1.0,), coupling="raw", level_start_steps=(10_000,), stop_gradient="full",
      empty_live="all", k_anneal_frac=0.1))
  paper_run(c)
  c.lr = 1e-4
  return c
