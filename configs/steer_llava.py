"""Steering on LLaVA-1.5-13B (language layer 39; only image-token positions are steered)."""
from configs import steer_qwen3vl


def get_config():
  return steer_qwen3vl.get_config("llava")
