r"""Cost of the sparse selections against one encoder matmul, in one run (ratios).

  .venv/bin/python -m bench.selection [--B=4096 --n=8192 --d=1024 --k=32]

Prints seconds per call and each selection's time as a multiple of x @ W_enc (B x d x n).
"block maxima" is the sparse path's batch selection (sparse.select_batch, docs/speed.md section 5);
the others are the dense path's masks (csae_jax/ops.py).
"""
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

from csae_jax import ops
from csae_jax import sparse

_B = flags.DEFINE_integer("B", 4096, "Tokens per batch.")
_N = flags.DEFINE_integer("n", 8192, "Dictionary size.")
_D = flags.DEFINE_integer("d", 1024, "Activation width.")
_K = flags.DEFINE_integer("k", 32, "Active latents per token.")


def timed(fn, *args, reps=3):
  fn = jax.jit(fn)
  jax.block_until_ready(fn(*args))
  t0 = time.perf_counter()
  for _ in range(reps):
    jax.block_until_ready(fn(*args))
  return (time.perf_counter() - t0) / reps


def main(argv):
  del argv
  B, n, d, k = _B.value, _N.value, _D.value, _K.value
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(keys[0], (B, d))
  w = jax.random.normal(keys[1], (d, n)) / d ** 0.5
  z = jax.random.normal(keys[2], (B, n))
  base = timed(lambda x, w: x @ w, x, w)
  rows = [
      ("matmul x @ W_enc", base),
      ("batch top-k, full bisection", timed(lambda z: ops.topk_mask(z, B * k), z)),
      ("batch top-k, row candidates", timed(
          lambda z: ops.batch_topk_mask(z, B * k, row_cap=4 * k), z)),
      ("batch top-k, block maxima", timed(lambda z: sparse.select_batch(z, k), z)),
      ("row top-k, lax.top_k", timed(lambda z: ops.row_topk_mask(z, k), z)),
      ("row top-k, traced k bisection", timed(
          lambda z: ops.topk_mask(z, jnp.int32(k), axis=-1), z)),
  ]
  print(f"B={B} n={n} d={d} k={k} devices={jax.devices()}")
  for name, t in rows:
    print(f"{name:32s} {t * 1e3:9.1f} ms   {t / base:5.2f} x matmul")


if __name__ == "__main__":
  app.run(main)
