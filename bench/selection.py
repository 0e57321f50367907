r"""Cost of the sparse selections against one encoder matmul, in one run (ratios).

  .venv/bin/python bench/selection.py [--B 4096 --n 8192 --d 1024 --k 32]

Prints seconds per call and each selection's time as a multiple of x @ W_enc (B x d x n).
"""
import argparse
import time

import jax
import jax.numpy as jnp

from csae_jax import ops


def timed(fn, *args, reps=3):
  fn = jax.jit(fn)
  jax.block_until_ready(fn(*args))
  t0 = time.perf_counter()
  for _ in range(reps):
    jax.block_until_ready(fn(*args))
  return (time.perf_counter() - t0) / reps


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--B", type=int, default=4096)
  ap.add_argument("--n", type=int, default=8192)
  ap.add_argument("--d", type=int, default=1024)
  ap.add_argument("--k", type=int, default=32)
  a = ap.parse_args()
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(keys[0], (a.B, a.d))
  w = jax.random.normal(keys[1], (a.d, a.n)) / a.d ** 0.5
  z = jax.nn.relu(jax.random.normal(keys[2], (a.B, a.n)))
  base = timed(lambda x, w: x @ w, x, w)
  rows = [
      ("matmul x @ W_enc", base),
      ("batch top-k, full bisection", timed(lambda z: ops.topk_mask(z, a.B * a.k), z)),
      ("batch top-k, row candidates", timed(
          lambda z: ops.batch_topk_mask(z, a.B * a.k, row_cap=4 * a.k), z)),
      ("row top-k, lax.top_k", timed(lambda z: ops.row_topk_mask(z, a.k), z)),
      ("row top-k, traced k bisection", timed(
          lambda z: ops.topk_mask(z, jnp.int32(a.k), axis=-1), z)),
  ]
  print(f"B={a.B} n={a.n} d={a.d} k={a.k} devices={jax.devices()}")
  for name, t in rows:
    print(f"{name:32s} {t * 1e3:9.1f} ms   {t / base:5.2f} x matmul")


if __name__ == "__main__":
  main()
