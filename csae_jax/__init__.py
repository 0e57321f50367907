"""CSAE-JAX: cascaded sparse autoencoders and baseline SAEs as pure JAX functions.

`csae_jax.load(workdir)` opens a trained run as a notebook-friendly hierarchy (csae_jax.api); it is
imported on first use so that `import csae_jax` stays light.
"""


def load(workdir, *args, **kwargs):
  """Open a trained run or experiment method (see csae_jax.api.load)."""
  from csae_jax import api
  return api.load(workdir, *args, **kwargs)


__all__ = ["load"]
