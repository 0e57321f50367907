"""Stacked SAE at the paper's sizes: TopK n1=20000 (k1=6) on activations, TopK n2=10000 (k2=1)
on its codes, all three loss terms (SPEC 2.8).

  python -m launch.train --config=configs/stacked.py --workdir=runs/stacked \
      --config.data.path=stores/qwen3vl_imagenet_train

Expected: the paper's Stacked row after 500M tokens; not reproduced here (needs the real store).
"""
from configs.common import PAPER_K
from configs.common import PAPER_N
from configs.common import QWEN3VL_D
from configs.common import base_config
from configs.common import paper_run


def get_config():
  c = base_config()
  c.model.name = "stacked"
  c.model.d = QWEN3VL_D
  c.model.options = dict(n=PAPER_N["l1"], k=PAPER_K["l1"], n2=PAPER_N["l2"], k2=PAPER_K["l2"])
  paper_run(c)
  return c
