"""Store read throughput under the chunk-window shuffle against what a training step consumes.

  python -m bench.store_read                                   # 512k tokens x 1024, bfloat16
  python -m bench.store_read --tokens=262144 --dtype=float32 --window_mb=256

Writes a store of random activations in a temp dir (or uses --store), then in one run:
  1. window: tokens/s delivered by the chunk-window source (read-ahead on), batch after batch,
     as the trainer's prefetch thread calls it;
  2. global: tokens/s of the global rule reading the same store row by row from disk (what a
     store beyond RAM cost before the window rule);
  3. consumption: tokens/s of one training step at the paper's Level-1 shape (BatchTopK, n
     --n, k --k, batch --batch, float32), measured here: the step reads must keep up with.
Each figure is the best of --reps timed passes; the ratio read / consumption is what matters
(> 1: reading keeps up; the prefetch thread overlaps it with the step).
"""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np
from absl import app
from absl import flags

_TOKENS = flags.DEFINE_integer("tokens", 1 << 19, "Tokens in the generated store.")
_D = flags.DEFINE_integer("d", 1024, "Activation width.")
_DTYPE = flags.DEFINE_enum("dtype", "bfloat16", ["float32", "bfloat16"], "Store dtype.")
_CHUNK = flags.DEFINE_integer("chunk_tokens", 8192, "Rows per chunk.")
_WINDOW_MB = flags.DEFINE_integer("window_mb", 256, "Bytes of rows per window, MiB.")
_BATCH = flags.DEFINE_integer("batch", 1024, "Tokens per batch.")
_N = flags.DEFINE_integer("n", 20000, "Level-1 dictionary size for the consumption step.")
_K = flags.DEFINE_integer("k", 6, "Level-1 k for the consumption step.")
_STEPS = flags.DEFINE_integer("steps", 200, "Batches read per timed pass.")
_REPS = flags.DEFINE_integer("reps", 3, "Timed passes (the best is kept).")
_STORE = flags.DEFINE_string("store", None, "Use this store instead of writing one.")


def _write_store(path: str) -> None:
  from csae_jax import store as store_lib
  rng = np.random.default_rng(0)
  n, d = _TOKENS.value, _D.value
  per_image = 256
  with store_lib.StoreWriter(path, d=d, dtype=_DTYPE.value, chunk_tokens=_CHUNK.value,
                             model="bench", split="train") as w:
    for start in range(0, n, 16 * per_image):
      rows = min(16 * per_image, n - start)
      acts = rng.standard_normal((rows, d), dtype=np.float32)
      imgs = rows // per_image
      first = start // per_image
      w.add_batch(acts, [per_image] * imgs, [0] * imgs,
                  [f"img{i}" for i in range(first, first + imgs)])
    w.finalize()


def _read_rate(source, rule, steps: int, start: int) -> float:
  t = time.perf_counter()
  for s in range(start, start + steps):
    source.read_rows(rule.indices(s))
    if hasattr(source, "after_step"):
      source.after_step(s)
  return steps * rule.batch_size / (time.perf_counter() - t)


def _step_rate() -> float:
  import jax
  from csae_jax import step as step_lib
  from csae_jax.models import build_model
  model = build_model({"name": "batchtopk", "d": _D.value,
                       "options": {"n": _N.value, "k": _K.value, "aux_k": None}}, 1000)
  opt, sched = step_lib.make_optimizer(model, 1000)
  x = np.random.default_rng(1).standard_normal((_BATCH.value, _D.value), dtype=np.float32)
  ts = jax.jit(lambda k, x: step_lib.init_train_state(model, opt, k, x))(jax.random.PRNGKey(0), x)
  f = jax.jit(lambda ts, x: step_lib.train_step(model, opt, sched, ts, x), donate_argnums=0)
  ts, m = f(ts, x)
  jax.block_until_ready(m)
  best = 0.0
  for _ in range(_REPS.value):
    t = time.perf_counter()
    ts, m = f(ts, x)
    jax.block_until_ready(m)
    best = max(best, _BATCH.value / (time.perf_counter() - t))
  return best


def main(argv):
  del argv
  from csae_jax import store as store_lib
  from csae_jax.trainer import data as data_lib
  from csae_jax.trainer import windowed
  with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
    path = _STORE.value or os.path.join(tmp, "store")
    if not _STORE.value:
      t = time.perf_counter()
      _write_store(path)
      print(f"wrote {path} in {time.perf_counter() - t:.1f} s")
    store = store_lib.ActivationStore.open(path)
    w = windowed.window_chunks_for(store, _WINDOW_MB.value << 20)
    print(f"store: {store.num_tokens} tokens x {store.d} {store.dtype}, {store.num_chunks} chunks;"
          f" window {w} chunks; batch {_BATCH.value}")
    rates = {"window": [], "global": []}
    for rep in range(_REPS.value):
      src = windowed.WindowedStoreSource(store, w, "bench")
      rule = src.make_rule(_BATCH.value, seed=rep)
      rates["window"].append(_read_rate(src, rule, _STEPS.value, 0))
      g = data_lib.StoreSource(store, "bench")
      grule = data_lib.BatchRule(store.num_tokens, _BATCH.value, seed=rep)
      rates["global"].append(_read_rate(g, grule, max(5, _STEPS.value // 20), 0))
    consume = _step_rate()
    for name, r in rates.items():
      print(f"{name:>7} read: {min(r):10.0f} - {max(r):10.0f} tokens/s "
            f"({min(r) / consume:.1f} - {max(r) / consume:.1f}x the step's consumption)")
    print(f"consumption: {consume:.0f} tokens/s (BatchTopK n={_N.value} k={_K.value}, batch "
          f"{_BATCH.value}, d={_D.value}, float32 step)")


if __name__ == "__main__":
  app.run(main)
