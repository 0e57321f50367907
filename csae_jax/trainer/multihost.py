"""jax.distributed set-up from explicit settings or the cluster environment (SLURM, TPU pods).

One process per host (or per GPU under SLURM with one task per GPU). jax detects SLURM
(SLURM_JOB_ID, SLURM_NTASKS, ...) and Cloud TPU pods itself when called without arguments; an
explicit coordinator address, process count and id override that (tests, bare machines).
"""
from __future__ import annotations

import os

import jax
from absl import logging

_initialized = False


def in_cluster_env() -> bool:
  """True when a multi-process launcher set up this process."""
  if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_JOB_ID" in os.environ:
    return True
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    return True
  return bool(os.environ.get("TPU_WORKER_HOSTNAMES", "").count(","))


def initialize(enabled="auto", coordinator: str = "", num_processes: int = 0,
               process_id: int = -1) -> bool:
  """Calls jax.distributed.initialize once when needed; returns whether it is multi-process."""
  global _initialized
  if _initialized or jax.distributed.is_initialized():
    _initialized = True
    return jax.process_count() > 1
  explicit = bool(coordinator) or num_processes > 0 or process_id >= 0
  if enabled in (False, "false") or (enabled == "auto" and not explicit and not in_cluster_env()):
    return False
  if explicit:
    missing = [n for n, v in (("coordinator", coordinator), ("num_processes", num_processes > 0),
                              ("process_id", process_id >= 0)) if not v]
    if missing:
      raise ValueError(f"explicit distributed set-up needs coordinator, num_processes and "
                       f"process_id; missing {missing}")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id, initialization_timeout=120)
  else:
    jax.distributed.initialize()
  _initialized = True
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return jax.process_count() > 1


def initialize_from_config(config) -> bool:
  dc = config.distributed
  return initialize(dc.enabled, dc.coordinator, int(dc.num_processes), int(dc.process_id))
