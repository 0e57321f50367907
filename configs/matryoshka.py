"""Matryoshka SAE (global BatchTopK) at the paper's sizes: groups [20000, 10000], k = 20 (SPEC 2.7).

  python -m launch.train --config=configs/matryoshka.py --workdir=runs/matryoshka \
      --config.data.path=stores/qwen3vl_imagenet_train

Its nested groups are the two levels (paper E.1): prefix 1 = Level 1, group 2 = Level 2.
Expected: the paper's Matryoshka row after 500M tokens; not reproduced here (needs the real store).
"""
from configs.common import PAPER_N
from configs.common import QWEN3VL_D
from configs.common import base_config
from configs.common import paper_run


def get_config():
  c = base_config()
  c.model.name = "matryoshka"
  c.model.d = QWEN3VL_D
  c.model.options = dict(n=PAPER_N["l1"] + PAPER_N["l2"], k=20, aux_k=512,
                         group_sizes=(PAPER_N["l1"], PAPER_N["l2"]), prefix_reduce="sum")
  paper_run(c)
  return c
