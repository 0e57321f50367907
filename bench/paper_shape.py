r"""The CSAE step at the authors' release shapes against a PyTorch transcription of the release.

  JAX_PLATFORMS=cpu python -m bench.paper_shape            # 3 rounds, float32
  ... --rounds=12 --reps=1          # many short rounds: the median ratio is robust to noise
  ... --rounds=5 --variants=default,dense,masked --torch_threads=2
  ... --compute_dtype=bfloat16      # bf16 encoder matmuls vs the release under bf16 autocast
  ... --memory                      # peak RSS of each step alone (one subprocess each)
  ... --breakdown                   # + the default step's loss forward and its update alone
  CSAE_JEMALLOC=0 ...               # glibc malloc (default: re-exec under jemalloc, purging off,
                                    # as the launch scripts do; the torch side runs under it too)

Shapes (SPEC 3, the release): B 1024 tokens, d 1024, Level 1 BatchTopK n1 20000 k1 6, Level 2
BatchTopK n2 10000 k2 1 over the live Level-1 atoms, Level 2 on, k at its target (after the
annealing window), no AuxK, lr 1e-4.

Columns, each round timing every step back to back (interleaved, so contention hits all alike):
  jax[variant]  this project's jit-compiled train step (step_lib.train_step): projection, clip,
                Adam, renormalisation included. Variants: default (compaction + sparse path),
                dense (sparse=off), masked (compaction=off, sparse=off: the step before issue 13).
  release       the transcription below, torch CPU with --torch_threads threads.
  floor         the dense floor: the Level-1 encoder matmul (B x d x n1) plus the Level-2 encoder
                matmul over the step's live atoms (n_live x d x n2), in JAX, same precision.
  adam          one optax Adam update over parameters of the CSAE's sizes (61M at the release's
                shapes): memory-bound, the optimizer traffic every step with dense Adam pays.
Ratios per round (release / jax, jax / floor); the summary gives min..max over rounds.

The release transcription (written for this bench from SPEC 3 and the description of the
authors' TwoLevelBatchTopKTrainer; not their code): Level 1 BatchTopK (flatten, top-(k1 B),
scatter), dense decoder; live atoms = columns active on some token; Level 2 BatchTopK on the
gathered live atoms with top-(k2 n_live); L = L1 + L2; backward; decoder-gradient projection;
global clip 1.0; torch.optim.Adam; unit-norm decoders.
"""
from __future__ import annotations

import functools
import json
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app
from absl import flags

from csae_jax import allocator
from csae_jax import compaction
from csae_jax import sparse
from csae_jax import step as step_lib
from csae_jax.models import build_model

_B = flags.DEFINE_integer("batch", 1024, "Tokens per batch.")
_D = flags.DEFINE_integer("d", 1024, "Activation width.")
_N1 = flags.DEFINE_integer("n1", 20000, "Level-1 latents.")
_K1 = flags.DEFINE_integer("k1", 6, "Level-1 k.")
_N2 = flags.DEFINE_integer("n2", 10000, "Level-2 latents.")
_K2 = flags.DEFINE_integer("k2", 1, "Level-2 k.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved rounds.")
_REPS = flags.DEFINE_integer("reps", 2, "Timed steps per method per round (mean).")
_WARMUP = flags.DEFINE_integer("warmup_rounds", 1, "Untimed rounds first (the first steps after "
                               "compilation are the slowest).")
_VARIANTS = flags.DEFINE_string("variants", "default,masked", "JAX step variants to time.")
_THREADS = flags.DEFINE_integer("torch_threads", 2, "torch.set_num_threads for the release.")
_DTYPE = flags.DEFINE_enum("compute_dtype", "float32", ["float32", "bfloat16"],
                           "Encoder matmul precision (JAX compute_dtype; torch bf16 autocast).")
_NO_TORCH = flags.DEFINE_bool("no_torch", False, "Skip the release column.")
_MEMORY = flags.DEFINE_bool("memory", False, "Also measure each step's peak RSS alone.")
_BREAKDOWN = flags.DEFINE_bool("breakdown", False, "Also time the default step's loss forward and "
                                "its optimizer update (projection, clip, Adam, renorm) alone.")
_ONLY = flags.DEFINE_string("only", "", "internal: time one method alone (memory subprocess).")

VARIANTS = {
    "default": dict(sparse="auto", compaction="auto"),
    "dense": dict(sparse="off", compaction="auto"),
    "masked": dict(sparse="off", compaction="off"),
}


def model_config(variant: str):
  v = VARIANTS[variant]
  lv = dict(family="batchtopk", aux_k=None, sparse=v["sparse"], compute_dtype=_DTYPE.value)
  return {"name": "cascade", "d": _D.value,
          "levels": [dict(lv, n=_N1.value, k=_K1.value), dict(lv, n=_N2.value, k=_K2.value)],
          "cascade": dict(k_anneal_frac=0.0, compaction=v["compaction"])}


def data(seed=0):
  """Tokens with a shared mean direction and an anisotropic spectrum, scaled to E||x||^2 = 1."""
  rng = np.random.default_rng(seed)
  d = _D.value
  scales = 1.0 / np.sqrt(1.0 + np.arange(d))
  x = rng.normal(size=(_B.value, d)) * scales + 0.5 * rng.normal(size=d) * scales
  return (x / np.sqrt(np.mean(np.sum(x * x, -1)))).astype(np.float32)


# ----------------------------------------------------------------------------- JAX
def train_setup(variant: str, x):
  """(model, optimizer, schedule, initial TrainState) of a JAX step variant."""
  model = build_model(model_config(variant), 100_000)
  opt, sched = step_lib.make_optimizer(model, 100_000, lr=1e-4, warmup_steps=0)
  return model, opt, sched, step_lib.init_train_state(model, opt, jax.random.PRNGKey(0), x)


def jax_step(variant: str, x):
  model, opt, sched, ts = train_setup(variant, x)
  step = step_lib.make_jitted_step(model, opt, sched)
  xs = jnp.asarray(x)
  hlo = step.lower(ts, xs).compile().as_text()
  ts, m = step(ts, xs)                                       # compile + warm
  jax.block_until_ready(ts)
  state = {"ts": ts}

  def run():
    state["ts"], metrics = step(state["ts"], xs)
    jax.block_until_ready(state["ts"].params)
    return metrics

  return run, float(m["l2/live_atoms"]), "sort(" in hlo


def breakdown_fns(x):
  """{fwd, update}: the default step's loss forward alone (selection, gathers, both levels' loss:
  the floor's matmuls plus what the forward adds to them) and its update alone on a fixed gradient
  (projection, clip, per-level Adam, renormalisation: what it adds to a bare Adam pass)."""
  from csae_jax import conventions as cv  # pylint: disable=import-outside-toplevel
  from csae_jax import coupling  # pylint: disable=import-outside-toplevel
  model, opt, _, ts = train_setup("default", x)
  xs = jnp.asarray(x)
  fwd = jax.jit(lambda p, st, x: model.loss(p, st, x, step=ts.step)[0])
  _, grads = jax.jit(lambda p, st, x: coupling.value_and_grad(model, p, st, x, ts.step))(
      ts.params, ts.model_state, xs)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def update(p, o, g):
    u, o = opt.update(g, o, p)
    p = optax.apply_updates(p, u)
    return cv.renormalize_decoders(p, model.decoder_mask(p)), o

  state = {"p": ts.params, "o": ts.opt_state}

  def run_update():
    state["p"], state["o"] = update(state["p"], state["o"], grads)
    jax.block_until_ready(state["p"])

  def run_fwd():
    jax.block_until_ready(fwd(state["p"], ts.model_state, xs))

  run_update()
  run_fwd()
  return {"fwd": run_fwd, "update": run_update}


def floor_fn(n_live: int):
  """Level-1 + Level-2 encoder matmuls (the dense floor), at the step's precision."""
  dt = jnp.dtype(_DTYPE.value)
  k = jax.random.split(jax.random.PRNGKey(1), 4)
  x = jax.random.normal(k[0], (_B.value, _D.value)).astype(dt)
  w1 = jax.random.normal(k[1], (_D.value, _N1.value)).astype(dt)
  a = jax.random.normal(k[2], (n_live, _D.value)).astype(dt)
  w2 = jax.random.normal(k[3], (_D.value, _N2.value)).astype(dt)
  f = jax.jit(lambda x, w1, a, w2: (jnp.dot(x, w1, preferred_element_type=jnp.float32),
                                    jnp.dot(a, w2, preferred_element_type=jnp.float32)))
  jax.block_until_ready(f(x, w1, a, w2))
  return lambda: jax.block_until_ready(f(x, w1, a, w2))


def adam_fn():
  """One Adam update of parameters the size of the CSAE's (W_enc, W_dec of both levels, biases),
  moments and parameters donated: the optimizer's compulsory memory traffic (read p, g, m, v;
  write p, m, v), which no step that keeps the release's dense Adam can avoid."""
  d, n1, n2 = _D.value, _N1.value, _N2.value
  shapes = [(d, n1), (n1, d), (n1,), (d,), (d, n2), (n2, d), (n2,), (d,)]
  keys = jax.random.split(jax.random.PRNGKey(3), len(shapes))
  params = [jax.random.normal(k, s) for k, s in zip(keys, shapes)]
  grads = [0.01 * p for p in params]
  opt = optax.adam(1e-4)
  state = {"p": params, "s": opt.init(params)}

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def update(p, s, g):
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s

  def run():
    state["p"], state["s"] = update(state["p"], state["s"], grads)
    jax.block_until_ready(state["p"])

  run()
  return run


def selection_fn(n_live: int):
  """The Level-2 batch top-k alone, as the step runs it: sparse.select_batch over the compacted
  (capacity x n2) pre-activations with n_live valid rows, capacity = the bucket the step picks."""
  bound = _K1.value * _B.value
  cap = min([c for c in compaction.buckets(bound, _N1.value) if c >= n_live] or [bound])
  valid = jnp.arange(cap) < n_live
  z = jax.random.normal(jax.random.PRNGKey(2), (cap, _N2.value))
  f = jax.jit(lambda z, m: sparse.select_batch(z, _K2.value, m, cap * _K2.value))
  hlo = f.lower(z, valid).compile().as_text()
  jax.block_until_ready(f(z, valid))
  return (lambda: jax.block_until_ready(f(z, valid))), "sort(" in hlo


# ----------------------------------------------------------------------------- torch release
def release_step(x):
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(_THREADS.value)
  torch.manual_seed(0)
  d, n1, n2, k1, k2 = _D.value, _N1.value, _N2.value, _K1.value, _K2.value

  def level(n):
    w = torch.nn.functional.normalize(torch.randn(n, d), dim=-1)
    return {"W_enc": torch.nn.Parameter(w.T.clone()), "b_enc": torch.nn.Parameter(torch.zeros(n)),
            "W_dec": torch.nn.Parameter(w.clone()), "b_dec": torch.nn.Parameter(torch.zeros(d))}

  p1, p2 = level(n1), level(n2)
  params = list(p1.values()) + list(p2.values())
  adam = torch.optim.Adam(params, lr=1e-4, betas=(0.9, 0.999))
  xt = torch.from_numpy(x)
  autocast = _DTYPE.value == "bfloat16"

  def batch_topk(pre, k_total):
    acts = torch.relu(pre)
    flat = acts.flatten()
    vals, idx = flat.topk(k_total, sorted=False)
    return torch.zeros_like(flat).scatter(-1, idx, vals).view_as(acts)

  def sae(p, inp, k_total):
    pre = (inp - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
    f = batch_topk(pre, k_total)
    return f, f @ p["W_dec"] + p["b_dec"]

  def run():
    adam.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
      f1, xhat = sae(p1, xt, k1 * xt.shape[0])
      l1 = (xt - xhat.float()).pow(2).sum(-1).mean()
      live = (f1 > 0).any(0).nonzero().squeeze(-1)
      atoms = p1["W_dec"][live]
      _, ahat = sae(p2, atoms, k2 * live.numel())
      l2 = (atoms - ahat.float()).pow(2).sum(-1).mean()
      loss = l1 + l2
    loss.backward()
    with torch.no_grad():
      for p in (p1, p2):
        w, g = p["W_dec"], p["W_dec"].grad
        g -= (g * w).sum(-1, keepdim=True) * w
      torch.nn.utils.clip_grad_norm_(params, 1.0)
    adam.step()
    with torch.no_grad():
      for p in (p1, p2):
        p["W_dec"].div_(p["W_dec"].norm(dim=-1, keepdim=True) + 1e-8)
    return int(live.numel())

  run()
  return run


# ----------------------------------------------------------------------------- driver
def timed(fn, reps):
  t0 = time.perf_counter()
  for _ in range(reps):
    fn()
  return (time.perf_counter() - t0) / reps


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_table():
  out = {}
  for method in ["release"] * (not _NO_TORCH.value) + _VARIANTS.value.split(","):
    cmd = [sys.executable, __file__, f"--only={method}", f"--compute_dtype={_DTYPE.value}",
           f"--batch={_B.value}", f"--d={_D.value}", f"--n1={_N1.value}", f"--n2={_N2.value}"]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    out[method] = json.loads(res.stdout.strip().splitlines()[-1])["peak_rss_mb"]
  return out


def main(argv):
  del argv
  allocator.reexec_with_jemalloc()   # as the launch scripts do (CSAE_JEMALLOC=0: default malloc)
  x = data()
  if _ONLY.value:
    fn = release_step(x) if _ONLY.value == "release" else jax_step(_ONLY.value, x)[0]
    fn()
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}))
    return
  variants = _VARIANTS.value.split(",")
  steps, info = {}, {}
  for v in variants:
    t0 = time.perf_counter()
    steps[v], live, has_sort = jax_step(v, x)
    info[v] = dict(compile_s=round(time.perf_counter() - t0, 1), live_atoms=live, sort=has_sort)
  n_live = int(info[variants[0]]["live_atoms"])
  floor = floor_fn(n_live)
  select, select_sort = selection_fn(n_live)
  adam = adam_fn()
  parts = breakdown_fns(x) if _BREAKDOWN.value else {}
  if not _NO_TORCH.value:
    steps["release"] = release_step(x)
  print(f"cpu: {allocator.describe_cpu()}", flush=True)
  print(f"devices={jax.devices()} allocator={allocator.describe()} dtype={_DTYPE.value} live={n_live} info={info} "
        f"selection_sort={select_sort}", flush=True)
  for _ in range(_WARMUP.value):
    for fn in list(steps.values()) + [floor, adam, select] + list(parts.values()):
      fn()
  rounds = []
  for r in range(_ROUNDS.value):
    row = {name: timed(fn, _REPS.value) for name, fn in steps.items()}
    row["floor"] = timed(floor, _REPS.value)
    row["adam"] = timed(adam, _REPS.value)
    row["l2_selection"] = timed(select, _REPS.value)
    row.update({name: timed(fn, _REPS.value) for name, fn in parts.items()})
    rounds.append(row)
    print(f"round {r}: " + "  ".join(f"{k}={v:.3f}s" for k, v in row.items()), flush=True)

  def rng(vals):
    return f"{np.median(vals):.2f} ({min(vals):.2f}..{max(vals):.2f})"

  # Ratios are taken within a round (the steps run back to back), so a slow minute of the shared
  # machine moves both sides; the median over rounds is the figure to quote, with the range.
  print("\nsummary over rounds: median (min..max):")
  for v in variants:
    print(f"  jax[{v}]  {rng([r[v] for r in rounds])} s   /floor {rng([r[v] / r['floor'] for r in rounds])}"
          + ("" if _NO_TORCH.value else
             f"   release/jax {rng([r['release'] / r[v] for r in rounds])}"))
  if not _NO_TORCH.value:
    print(f"  release  {rng([r['release'] for r in rounds])} s")
  print(f"  floor    {rng([r['floor'] for r in rounds])} s")
  print(f"  Adam alone (61M parameters) {rng([r['adam'] for r in rounds])} s; floor + Adam "
        f"{rng([r['floor'] + r['adam'] for r in rounds])} s, jax[{variants[0]}] / (floor + Adam) "
        f"{rng([r[variants[0]] / (r['floor'] + r['adam']) for r in rounds])}")
  print(f"  L2 batch top-k ({n_live} x {_N2.value}) {rng([r['l2_selection'] for r in rounds])} s, "
        f"share of jax[{variants[0]}] {rng([r['l2_selection'] / r[variants[0]] for r in rounds])}")
  if parts:
    print(f"  loss forward alone {rng([r['fwd'] for r in rounds])} s (/floor "
          f"{rng([r['fwd'] / r['floor'] for r in rounds])}); update alone "
          f"{rng([r['update'] for r in rounds])} s (/Adam alone "
          f"{rng([r['update'] / r['adam'] for r in rounds])})")
  if _MEMORY.value:
    print("peak RSS (MB, each step alone):", memory_table())


if __name__ == "__main__":
  app.run(main)
