"""Flat topk SAE baseline at the paper's sizes (Level-1 n=20000 or Level-2 n=10000, d=1024).

  python launch/train.py --config=configs/topk.py:l1 --workdir=runs/topk_l1 \
      --config.data.path=stores/qwen3vl_imagenet_train
  python launch/train.py --config=configs/topk.py:l2 --workdir=runs/topk_l2 \
      --config.data.path=stores/qwen3vl_imagenet_train

Gemma-3 / LLaVA stores: add --config.model.d=1152 / 5120 (checked against the store).
"""
from csae_jax.trainer.config import paper_baseline


def get_config(size: str = "l1"):
  return paper_baseline("topk", size or "l1")
