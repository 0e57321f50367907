"""Tokens/s of one full training step per family and for the cascade, against the FLOP floor.

  python -m bench.train_step                       # B=4096 d=1024 n=8192 k=32 float32
  python -m bench.train_step --batch=1024 --reps=2 --families=relu,batchtopk
  python -m bench.train_step --saelens_python=/path/to/saelens-venv/bin/python  # + SAELens column
  python -m bench.train_step --sparse=on,off --families=topk,batchtopk   # sparse path A/B
  (the batch top-k selection alone, bisection vs row candidates: bench/selection.py)
  CSAE_JEMALLOC=0 ...               # glibc malloc (default: re-exec under jemalloc, purging off,
                                    # as the launch scripts do; the torch side runs under it too)

In one run on one machine: the matmul rate R (best time of the step's own matmul shape), then for
each method the step time t, its matmul FLOPs F (counted from the step's jaxpr: every dot_general,
forward and backward) and the efficiency (F / R) / t, the fraction of the machine's matmul rate the
whole step reaches (1.0 = nothing but matmuls at full speed). The cascade (Level 2: n2 latents over
the n level-1 atoms) is compared with its flat Level-1 step: time ratio vs FLOP ratio. Also reports
whether `sort(` appears in each compiled step (XLA:CPU top-k fallbacks). With --saelens_python,
SAELens's own training step for the same shapes is timed in that interpreter in the same run
(bench/saelens_step.py) and each family gets the ratio SAELens time / our time.
"""
from __future__ import annotations

import json
import os
import subprocess
import time


import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from jax.extend import core as jax_core
from absl import flags

from csae_jax import allocator
from csae_jax import families
from csae_jax import step as step_lib
from csae_jax.models import build_model

_B = flags.DEFINE_integer("batch", 4096, "Tokens per batch.")
_D = flags.DEFINE_integer("d", 1024, "Activation width.")
_N = flags.DEFINE_integer("n", 8192, "Dictionary size.")
_K = flags.DEFINE_integer("k", 32, "k of the k-sparse families.")
_N2 = flags.DEFINE_integer("n2", 1024, "Cascade Level-2 latents (over the n atoms).")
_REPS = flags.DEFINE_integer("reps", 3, "Timed steps per method (the best efficiency is kept).")
_SAELENS_PYTHON = flags.DEFINE_string(
    "saelens_python", None, "Python of an environment with sae_lens + torch 2.13.0: adds a column "
    "with SAELens's step time for the same shapes (bench/saelens_step.py, run in that Python).")
_SPARSE = flags.DEFINE_list(
    "sparse", ["auto"], "Sparse code path modes (auto,on,off) to time for the k-sparse methods "
    "(topk, batchtopk, matryoshka, batchtopk_noaux, cascade); e.g. --sparse=on,off.")
_FAMILIES = flags.DEFINE_string(
    "families", "relu,topk,batchtopk,jumprelu,gated,pannealing,matryoshka,stacked,"
    "batchtopk_noaux,cascade",
    "Comma-separated methods to time.")


K_SPARSE = ("topk", "batchtopk", "matryoshka", "batchtopk_noaux", "cascade")


def model_config(name, d, n, k, n2, sparse="auto"):
  if name == "batchtopk_noaux":   # the cascade's Level 1 alone (the release has no AuxK)
    return {"name": "batchtopk", "d": d, "options": {"n": n, "k": k, "aux_k": None,
                                                     "sparse": sparse}}
  if name == "cascade":
    return {"name": "cascade", "d": d,
            "levels": [dict(family="batchtopk", n=n, k=k, aux_k=None, sparse=sparse),
                       dict(family="batchtopk", n=n2, k=1, aux_k=None, sparse=sparse)],
            "cascade": dict(k_anneal_frac=0.0)}
  options = {"n": n}
  spec = families.spec(name)
  if spec.k_sparse:
    options.update(k=k)
  if name in ("topk", "batchtopk", "matryoshka"):
    options.update(sparse=sparse)
  if spec.hierarchy == "groups":
    options.update(group_sizes=[n // 4, n - n // 4])
  if spec.hierarchy == "on_codes":
    options.update(n2=n2, k2=max(1, k // 4))
  return {"name": name, "d": d, "options": options}


def dot_flops(jaxpr) -> float:
  """2 * M * N * K summed over every dot_general of a (closed) jaxpr, sub-jaxprs included."""
  total = 0.0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      (lc, _), (lb, _) = eqn.params["dimension_numbers"]
      a = eqn.invars[0].aval.shape
      out = eqn.outvars[0].aval.shape
      total += 2.0 * np.prod(out, dtype=np.float64) * np.prod([a[i] for i in lc], dtype=np.float64)
    subs = list(jax_core.jaxprs_in_params(eqn.params))
    if eqn.primitive.name == "cond" and subs:
      # One branch runs: count the cheaper (in the benched steady state no latent is dead, so
      # AuxK's extra decode is skipped; other conds hold no matmul).
      total += min(dot_flops(sub) for sub in subs)
      continue
    for sub in subs:
      mult = 1.0
      if eqn.primitive.name == "scan":
        mult = float(eqn.params["length"])
      total += mult * dot_flops(sub)
  return total


def best_time(fn, reps):
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return min(times)


class MatmulRate:
  """FLOP/s of the step's matmul orientations (B x d @ d x n, B x n @ n x d, and the weight-
  gradient contraction over B) on this machine now; the best one is the rate a step could reach.
  Measured again next to every timed step, so a busy machine biases both the same way."""

  def __init__(self, b, d, n):
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (b, d), jnp.float32)
    f = jax.random.normal(key, (b, n), jnp.float32)
    w_enc = jax.random.normal(key, (d, n), jnp.float32)
    w_dec = jax.random.normal(key, (n, d), jnp.float32)
    self.flops = 2.0 * b * d * n
    self.cases = [(jax.jit(lambda x, w: x @ w), (x, w_enc)),
                  (jax.jit(lambda f, w: f @ w), (f, w_dec)),
                  (jax.jit(lambda f, x: f.T @ x), (f, x))]
    for fn, args in self.cases:
      jax.block_until_ready(fn(*args))

    self.best = 0.0

  def measure(self) -> float:
    rate = max(self.flops / best_time(lambda: fn(*args), 1) for fn, args in self.cases)
    self.best = max(self.best, rate)
    return rate


def compiled_step(name, b, d, n, k, n2, sparse="auto"):
  """(one(): runs a step and returns its loss, matmul FLOPs, sort in HLO) for one method.

  FLOPs count the cheapest branch of each cond/switch: the sparse path and the smallest
  compaction bucket, the branches the steady state takes."""
  model = build_model(model_config(name, d, n, k, n2, sparse), total_steps=10_000)
  opt, schedule = step_lib.make_optimizer(model, 10_000, warmup_steps=10)
  x = jax.random.normal(jax.random.PRNGKey(2), (b, d), jnp.float32) / np.sqrt(d)
  ts = jax.jit(lambda key, x: step_lib.init_train_state(model, opt, key, x))(
      jax.random.PRNGKey(0), x)
  ts = ts._replace(step=jnp.asarray(2000, jnp.int32))  # past warm-ups: the steady-state step

  def step(ts, x):
    return step_lib.train_step(model, opt, schedule, ts, x)

  flops = dot_flops(jax.make_jaxpr(step)(ts, x).jaxpr)
  compiled = jax.jit(step, donate_argnums=(0,)).lower(ts, x).compile()
  has_sort = "sort(" in compiled.as_text()
  state = {"ts": ts}

  def one():
    state["ts"], m = compiled(state["ts"], x)
    return m["loss"]

  one()
  return one, flops, has_sort


def time_step(name, b, d, n, k, n2, reps, rate: MatmulRate, sparse="auto"):
  """(best step seconds, matmul FLOPs, sort in HLO, best efficiency, rate at that rep)."""
  one, flops, has_sort = compiled_step(name, b, d, n, k, n2, sparse)
  best = (float("inf"), 0.0, 0.0)
  for _ in range(reps):          # each step timed right after a matmul-rate measurement
    r = rate.measure()
    t = best_time(one, 1)
    eff = flops / r / t
    if eff > best[1]:
      best = (t, eff, r)
  return best[0], flops, has_sort, best[1], best[2]


def saelens_times(b, d, n, k, reps) -> dict:
  """{family: SAELens seconds per step}, timed in --saelens_python (empty when not given)."""
  if not _SAELENS_PYTHON.value:
    print("# SAELens column skipped: pass --saelens_python=<python with sae_lens installed>")
    return {}
  script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "saelens_step.py")
  out = subprocess.run([_SAELENS_PYTHON.value, script, f"--B={b}", f"--d={d}", f"--n={n}",
                        f"--k={k}", f"--reps={reps}"], capture_output=True, text=True, check=True)
  res = json.loads(out.stdout.strip().splitlines()[-1])
  print(f"# SAELens: torch {res['torch']}, {res['threads']} threads; s/step: "
        + ", ".join(f"{f}={t:.3f}" for f, t in res["seconds_per_step"].items()))
  return res["seconds_per_step"]


def main(argv):
  del argv
  allocator.reexec_with_jemalloc()   # as the launch scripts do (CSAE_JEMALLOC=0: default malloc)
  b, d, n, k, n2, reps = _B.value, _D.value, _N.value, _K.value, _N2.value, _REPS.value
  print(f"# machine: {allocator.describe_cpu()}, jax {jax.__version__}, backend "
        f"{jax.default_backend()}, devices {jax.device_count()}, {allocator.describe()}")
  print(f"# shapes: B={b} d={d} n={n} k={k} float32; cascade Level 2: {n2} latents over {n} "
        f"atoms")
  rate = MatmulRate(b, d, n)
  print(f"# matmul rate (best of the step's B={b}, d={d}, n={n} matmuls), now: "
        f"{rate.measure() / 1e9:.1f} GFLOP/s; each row pairs a step with a fresh rate")
  saelens = saelens_times(b, d, n, k, reps)
  print(f"{'method':20s} {'step_s':>8s} {'tokens/s':>10s} {'GFLOP':>8s} {'GFLOP/s':>8s} "
        f"{'floor_s':>8s} {'eff':>6s} {'sort':>5s} {'vs SAELens':>10s}")
  results = {}
  runs = [(f, m) for f in _FAMILIES.value.split(",") if f
          for m in (_SPARSE.value if f in K_SPARSE else ["auto"])]
  for name, mode in runs:
    t, flops, has_sort, eff, r = time_step(name, b, d, n, k, n2, reps, rate, mode)
    label = name if len(_SPARSE.value) == 1 or name not in K_SPARSE else f"{name}/{mode}"
    results[label] = (t, flops, eff)
    vs = f"{saelens[name] / t:7.2f}x" if name in saelens else "      -"
    print(f"{label:20s} {t:8.3f} {b / t:10.0f} {flops / 1e9:8.1f} {r / 1e9:8.1f} "
          f"{flops / r:8.3f} {eff:6.2f} {'yes' if has_sort else 'no':>5s} {vs}", flush=True)
  print(f"# conservative: the best matmul rate seen in this run, {rate.best / 1e9:.1f} GFLOP/s, "
        "against each method's best step time:")
  for name, (t, flops, _) in results.items():
    print(f"#   {name:20s} eff {flops / rate.best / t:5.2f}")
  if any(r.startswith("cascade") for r in results) and any(r.startswith("batchtopk_noaux")
                                                            for r in results):
    # Interleaved A/B (flat, cascade, flat, ...): machine-load drift hits both alike.
    flat_one, flat_f, _ = compiled_step("batchtopk_noaux", b, d, n, k, n2)
    casc_one, casc_f, _ = compiled_step("cascade", b, d, n, k, n2)
    tf, tc = [], []
    for _ in range(max(reps, 4)):
      tf.append(best_time(flat_one, 1))
      tc.append(best_time(casc_one, 1))
    ratio = min(tc) / min(tf)
    print(f"# cascade / flat Level 1, interleaved A/B best step times: {min(tc):.3f} / "
          f"{min(tf):.3f} s = x{ratio:.3f}; FLOPs x{casc_f / flat_f:.3f}; time ratio / FLOP "
          f"ratio = {ratio / (casc_f / flat_f):.3f} (target <= 1.1)")


if __name__ == "__main__":
  app.run(main)
