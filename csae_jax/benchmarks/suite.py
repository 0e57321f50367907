"""The hierarchy benchmark: every method x regime x seed, scored against the truth files.

  python launch/benchmark.py --config=configs/benchmark_hierarchy.py --workdir=/tmp/bench_h

Per (regime, seed) the generator (generators.py) writes <workdir>/data/<regime>_s<seed>/
{data.npz, truth.npz}; `config.datasets` may instead name such directories (any truth file with
tokens beside it). Each method is trained with the single-device step of csae_jax.step on the
training images (tokens scaled to E||x||^2 = 1), then evaluated on held-out images: Level-1 atoms,
liveness and co-activation counts from csae_jax.evaluation.codes, parents by the method's rule
(CSAE: Level-2 encoder; pairs, Matryoshka, Stacked: co-activation; HAC / spectral: clustering the
flat BatchTopK Level-1 atoms), scored by scoring.py. Results per (regime, seed) are JSON files that
a rerun with the same config reuses; tables/*.md and plots/*.png aggregate mean +- sd over seeds.
"""
from __future__ import annotations

import hashlib
import json
import os
import time

import jax
import numpy as np

from csae_jax import conventions as cv
from csae_jax import step as step_lib
from csae_jax.benchmarks import generators as gen
from csae_jax.benchmarks import scoring
from csae_jax.evaluation import codes as codes_lib
from csae_jax.evaluation import experiments as exp_lib
from csae_jax.evaluation import parents as parents_lib
from csae_jax.evaluation import sources as sources_lib
from csae_jax.evaluation import subjects as subjects_lib
from csae_jax.models import build_model

METHODS = ("pair", "hac", "spectral", "matryoshka", "stacked", "csae_full", "csae_partial",
           "csae_bilateral", "csae_full_abstain")
DISPLAY = {"pair": "BatchTopK pair (co-act.)", "hac": "HAC", "spectral": "Spectral",
           "matryoshka": "Matryoshka", "stacked": "Stacked", "csae_full": "CSAE full",
           "csae_partial": "CSAE partial", "csae_bilateral": "CSAE bilateral",
           "csae_full_abstain": "CSAE full + abstention"}
RUNS_OF = {"pair": ("batchtopk_l1", "batchtopk_l2"), "hac": ("batchtopk_l1",),
           "spectral": ("batchtopk_l1",), "matryoshka": ("matryoshka",), "stacked": ("stacked",),
           "csae_full": ("csae_full",), "csae_partial": ("csae_partial",),
           "csae_bilateral": ("csae_bilateral",), "csae_full_abstain": ("csae_full",)}
COLUMNS = ("children_recovered", "parent_accuracy", "parent_accuracy_chance", "parent_ari",
           "grand_ari", "orphan_abstain", "child_abstain", "dead_fraction", "duplicates")


def split_list(s) -> list[str]:
  return exp_lib._split(s)


def seeds(config) -> list[int]:
  return [int(s) for s in split_list(config.seeds)]


def validate(config) -> None:
  for m in split_list(config.methods):
    if m not in METHODS:
      raise ValueError(f"config.methods names unknown method {m!r}; known: {METHODS}")
  for r in split_list(config.regimes):
    if r not in gen.REGIMES:
      raise ValueError(f"config.regimes names unknown regime {r!r}; known: {gen.REGIMES}")
  if not split_list(config.methods):
    raise ValueError("config.methods is empty")
  try:
    if not seeds(config):
      raise ValueError
  except ValueError:
    raise ValueError(f"config.seeds must be comma-separated integers, got {config.seeds!r}") from None
  for name in ("n1", "n2", "k1", "k2", "steps", "batch_size"):
    cv.check_positive(f"config.{name}", config[name])


# ----------------------------------------------------------------------------- data
def write_dataset(ds: gen.Dataset, directory: str, eval_fraction: float, seed: int) -> None:
  """data.npz (train / eval tokens and offsets, split by image) + truth.npz, atomically."""
  os.makedirs(directory, exist_ok=True)
  n_img = len(ds.token_offsets) - 1
  rng = np.random.default_rng(seed + 7919)
  ev = np.zeros(n_img, bool)
  ev[rng.choice(n_img, max(1, int(eval_fraction * n_img)), replace=False)] = True
  src = sources_lib.ArraySource(ds.tokens, ds.token_offsets)
  tr, te = src.subset_images(np.flatnonzero(~ev)), src.subset_images(np.flatnonzero(ev))
  tmp = os.path.join(directory, "data.tmp.npz")
  np.savez(tmp, train_tokens=tr.tokens, train_offsets=tr.token_offsets, eval_tokens=te.tokens,
           eval_offsets=te.token_offsets)
  os.replace(tmp, os.path.join(directory, "data.npz"))
  ds.truth.save(os.path.join(directory, "truth.npz"))


def load_dataset(directory: str):
  """(train ArraySource, eval ArraySource, Truth) from a dataset directory."""
  path = os.path.join(directory, "data.npz")
  if not os.path.exists(path):
    raise ValueError(f"{directory} has no data.npz (train_tokens, train_offsets, eval_tokens, "
                     "eval_offsets)")
  with np.load(path, allow_pickle=False) as z:
    missing = {"train_tokens", "train_offsets", "eval_tokens", "eval_offsets"} - set(z.files)
    if missing:
      raise ValueError(f"{path} misses {sorted(missing)}")
    tr = sources_lib.ArraySource(z["train_tokens"], z["train_offsets"], name="train")
    te = sources_lib.ArraySource(z["eval_tokens"], z["eval_offsets"], name="eval")
  truth = gen.Truth.load(os.path.join(directory, "truth.npz"))
  for s in (tr, te):
    if s.d != truth.leaf_dirs.shape[1]:
      raise ValueError(f"{directory}: tokens have d={s.d}, truth d={truth.leaf_dirs.shape[1]}")
    if not np.all(np.isfinite(s.tokens)):
      raise ValueError(f"{directory}: tokens contain NaN/Inf")
  return tr, te, truth


def load_scaled_dataset(directory: str):
  """load_dataset with both splits divided by the training tokens' RMS norm (E||x||^2 = 1)."""
  tr, te, truth = load_dataset(directory)
  scale = float(np.sqrt(np.mean(np.sum(np.square(tr.tokens, dtype=np.float64), -1))))
  return (sources_lib.ArraySource(tr.tokens / scale, tr.token_offsets),
          sources_lib.ArraySource(te.tokens / scale, te.token_offsets), truth)


def datasets(config, workdir: str) -> list[tuple[str, int, str]]:
  """[(regime name, seed, directory)] to benchmark, generating what is missing."""
  if config.datasets:
    return [(os.path.basename(os.path.normpath(p)), 0, p) for p in split_list(config.datasets)]
  out = []
  for regime in split_list(config.regimes):
    for seed in seeds(config):
      directory = os.path.join(workdir, "data", f"{regime}_s{seed}")
      if not os.path.exists(os.path.join(directory, "truth.npz")):
        over = dict(config.generator.get(regime, {}) or {})
        ds = gen.make_dataset(gen.regime_config(regime, int(seed), **over))
        write_dataset(ds, directory, config.eval_fraction, int(seed))
      out.append((regime, int(seed), directory))
  return out


# ----------------------------------------------------------------------------- runs
def _experiment_view(config):
  """The experiments runner's config schema, so methods are built exactly as there."""
  import ml_collections
  e = ml_collections.ConfigDict(exp_lib._plain(config.experiment))
  e.n1, e.n2, e.k1, e.k2 = config.n1, config.n2, config.k1, config.k2
  e.methods = "batchtopk,matryoshka,stacked,csae"
  e.ablations = "partial_sg,bilateral_sg"
  return e


def train_runs(config, needed, train_src, seed: int, log=print) -> dict:
  """{run name: (Model, params, state, last metrics)} trained on the scaled training tokens."""
  models = exp_lib.run_models(_experiment_view(config), train_src.d)
  x = np.asarray(train_src.tokens, np.float32)
  out = {}
  for run in needed:
    model = build_model(models[run], total_steps=config.steps)
    rng = np.random.default_rng(seed * 1000 + len(out))

    def batches(rng=rng):
      while True:
        yield x[rng.integers(0, len(x), config.batch_size)]

    t0 = time.time()
    ts, last = step_lib.fit(model, batches(), config.steps, key=jax.random.PRNGKey(seed),
                            lr=config.lr, warmup_steps=config.warmup_steps)
    log(f"  trained {run} in {time.time() - t0:.1f}s")
    out[run] = (model, ts.params, ts.model_state, last)
  return out


def parent_map(method, config, subject, pass_result) -> np.ndarray:
  if subject.kind == "cascade":
    return np.asarray(subject.param_parent_maps[0], np.int64)
  if method in ("hac", "spectral"):
    return parents_lib.cluster_atoms(subject.atoms1, config.n2, method, keep=pass_result.fired,
                                     seed=0)
  return parents_lib.coactivation_parents(pass_result.coact)


def evaluate(method, config, runs, eval_src, truth) -> dict:
  r = RUNS_OF[method]
  m1, p1, s1, last = runs[r[0]]
  kw = {}
  if method == "pair":
    m2, p2, s2, _ = runs[r[1]]
    kw = dict(model2=m2, params2=p2, state2=s2)
  if method.endswith("_abstain"):   # the same trained run, parents with the abstention rule
    m1 = type(m1)(m1.name, m1.cfg.replace(**exp_lib._plain(config.abstain)))
  subject = subjects_lib.from_model(m1, p1, s1, **kw)
  res = codes_lib.run_pass(subject, eval_src, codes_lib.PassOptions(chunk_tokens=4096))
  pm = parent_map(method, config, subject, res)
  out = scoring.score(subject.atoms1, pm, truth, fired=res.fired, match_cos=config.match_cos)
  out["fvu"] = float(res.recon["fvu"])
  if m1.is_cascade:
    out["coupling_raw_ratio"] = float(last.get("l2/coupling_raw_ratio", float("nan")))
  return out


def fingerprint(config) -> str:
  keys = {k: exp_lib._plain(config[k]) for k in ("n1", "n2", "k1", "k2", "steps", "batch_size",
                                                  "lr", "warmup_steps", "experiment", "match_cos", "abstain",
                                                  "generator", "eval_fraction")}
  return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


def run_dataset(config, regime, seed, directory, results_dir, log=print) -> dict:
  path = os.path.join(results_dir, f"{regime}_s{seed}.json")
  methods = split_list(config.methods)
  fp = fingerprint(config)
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    if saved.get("fingerprint") == fp and all(m in saved["scores"] for m in methods):
      return saved
  train_src, eval_src, truth = load_scaled_dataset(directory)
  needed = sorted({r for m in methods for r in RUNS_OF[m]})
  log(f"{regime} seed {seed}: training {', '.join(needed)}")
  runs = train_runs(config, needed, train_src, seed, log)
  scores = {m: evaluate(m, config, runs, eval_src, truth) for m in methods}
  out = {"regime": regime, "seed": seed, "fingerprint": fp, "scores": scores}
  os.makedirs(results_dir, exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(out, f, indent=1)
  os.replace(tmp, path)
  return out


def run_suite(config, workdir: str, log=print) -> dict:
  from csae_jax.benchmarks import report
  validate(config)
  os.makedirs(workdir, exist_ok=True)
  results = []
  t0 = time.time()
  for regime, seed, directory in datasets(config, workdir):
    results.append(run_dataset(config, regime, seed, directory, os.path.join(workdir, "results"),
                               log))
  table = report.write(results, split_list(config.methods), workdir)
  log(f"benchmark finished in {time.time() - t0:.0f}s; table in {workdir}/tables/benchmark.md")
  return {"results": results, "table": table}
