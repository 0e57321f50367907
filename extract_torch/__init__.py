"""PyTorch extraction stage: MLLM activations (and reference embeddings) into the activation store.

registry (families, hook paths, token rules), tiny_models (offline test models), sources and
samplers (images), embeddings (HMS reference backbones), pipeline (extract, resume, shards),
hdf5_import (the authors' files). Driver: launch/extract.py. Store format: csae_jax/store/.
"""
