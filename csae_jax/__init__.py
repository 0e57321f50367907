"""CSAE-JAX: cascaded sparse autoencoders and baseline SAEs as pure JAX functions.

`csae_jax.load(path)` opens a trained run, an experiment or an export as a notebook-friendly
hierarchy (csae_jax.api); it is imported on first use so that `import csae_jax` stays light.
"""
from __future__ import annotations

import os
import typing

if typing.TYPE_CHECKING:
  from csae_jax.api import Hierarchy


def load(path: str | os.PathLike, method: str | None = None, *, eval_store: str | None = None,
         step: int | None = None) -> "Hierarchy":
  """Open a learned hierarchy for browsing in Python (csae_jax.api.Hierarchy).

  Args:
    path: an experiment workdir (python -m launch.experiments), a trainer run (launch.train) or a
      native export directory (python -m csae_jax.export).
    method: the experiment's method to open (default "csae"); ignored for a run or an export.
    eval_store: an activation store with image embeddings: evaluates HMS, top images and
      co-activation parents of a run or export on it (a run caches it in <path>/evaluation).
    step: a run's checkpoint step (default the latest).

  Returns:
    A Hierarchy: parents, children, HMS, top images, the concept tree, encode().
  """
  from csae_jax import api
  return api.load(path, method, eval_store=eval_store, step=step)


__all__ = ["load"]
