"""Steering on Gemma-3-4B-IT (vision layer 26); see configs/steer_qwen3vl.py for the fields."""
from configs import steer_qwen3vl


def get_config():
  return steer_qwen3vl.get_config("gemma3")
