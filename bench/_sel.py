import time, jax, jax.numpy as jnp, numpy as np
from absl import app
from csae_jax import sparse, _sparse_old as old
def timed(f, *a, reps=10):
  jax.block_until_ready(f(*a)); ts = []
  for _ in range(reps):
    t0 = time.perf_counter(); jax.block_until_ready(f(*a)); ts.append(time.perf_counter() - t0)
  return np.median(ts) * 1000, min(ts) * 1000
def main(argv):
  for (b, n, k, nvalid, scale) in [(1024, 20000, 6, 1024, 1.0), (3840, 10000, 1, 3788, 1.0), (4096, 8192, 32, 4096, 1.0)]:
    pre = jax.random.normal(jax.random.PRNGKey(0), (b, n)) * 0.03 + 0.01 * jax.random.normal(jax.random.PRNGKey(1), (b, 1))
    m = jnp.arange(b) < nvalid
    cap = b * k
    c = max(16, 4 * k)
    fo = jax.jit(lambda p, m: old.select_batch(old.masked_scores(p, m), k, c, m, cap))
    fn = jax.jit(lambda p, m: sparse.select_batch(p, k, m, cap))
    ro, rn = fo(pre, m), fn(pre, m)
    so = set(zip(np.asarray(ro[0])[np.asarray(ro[2])].tolist(), np.asarray(ro[1])[np.asarray(ro[2])].tolist()))
    sn = set(zip(np.asarray(rn[0])[np.asarray(rn[2])].tolist(), np.asarray(rn[1])[np.asarray(rn[2])].tolist()))
    print(b, n, k, "fits", bool(ro[3]), bool(rn[3]), "same", so == sn, len(sn), "old %.1f/%.1f ms new %.1f/%.1f ms (median/min)" % (*timed(fo, pre, m), *timed(fn, pre, m)))
    hlo = fn.lower(pre, m).compile().as_text(); print("  sort(" in hlo, "top-k" in hlo or "TopK" in hlo)
app.run(main)
