"""Alpha sweep and the Level-1 collapse (docs/hierarchy_quality.md, "Coupling").

  python -m bench.coupling_sweep --regime=cofire --n1=192 --steps=1500 --batch_size=1024 \
      --settings=raw:1,raw:0.02,ratio:0.1,ratio:0.01,bilateral:0 --k_anneal_frac=0.1 \
      --out=/tmp/sweep.jsonl

Trains CSAE (Level 2 of n2 units: the benchmark's CSAE settings, a re-seeded vq Level 2 since
2026-12-03) on one generated regime for
each coupling setting and appends one JSON line per run: children recovered (cos > .9), parent
ARI, the collapse figures (fraction of fired Level-1 atoms closer to a parent direction than to
every child; number of distinct directions among fired atoms at cos > .95) and the raw coupling
ratio ||P g_L2|| / ||P g_L1|| on the Level-1 decoder at the last step.
"""
from __future__ import annotations

import json
import time

from absl import app
from absl import flags
import numpy as np

from csae_jax.benchmarks import generators as gen
from csae_jax.benchmarks import scoring
from csae_jax.benchmarks import suite

_REGIME = flags.DEFINE_string("regime", "cofire", "generator regime")
_SEED = flags.DEFINE_integer("seed", 0, "data and init seed")
_N1 = flags.DEFINE_integer("n1", 192, "Level-1 size")
_N2 = flags.DEFINE_integer("n2", 24, "Level-2 size")
_STEPS = flags.DEFINE_integer("steps", 1500, "training steps")
_START = flags.DEFINE_integer("start", 200, "Level-2 start step")
_BATCH = flags.DEFINE_integer("batch_size", 1024, "tokens per step")
_ANNEAL = flags.DEFINE_float("k_anneal_frac", None, "fraction of steps over which k is annealed "
                             "from d (SPEC 3); default: the benchmark config's (0)")
_SETTINGS = flags.DEFINE_string("settings", "raw:1,ratio:0.1", "coupling:alpha,... "
                                "(bilateral:0 = bilateral stop-gradient)")
_OUT = flags.DEFINE_string("out", "/tmp/coupling_sweep.jsonl", "JSON-lines output (appended)")


def main(argv):
  del argv
  from configs import benchmark_hierarchy
  c = benchmark_hierarchy.get_config()
  c.n1, c.n2, c.steps, c.batch_size = _N1.value, _N2.value, _STEPS.value, _BATCH.value
  c.experiment.csae.cascade.level_start_steps = (_START.value,)
  if _ANNEAL.value is not None:
    c.experiment.csae.cascade.k_anneal_frac = _ANNEAL.value
  ds = gen.make_dataset(gen.regime_config(_REGIME.value, _SEED.value))
  d = f"/tmp/coupling_sweep_data/{_REGIME.value}_s{_SEED.value}"
  suite.write_dataset(ds, d, 0.2, _SEED.value)
  tr, te, truth = suite.load_scaled_dataset(d)
  for setting in suite.split_list(_SETTINGS.value):
    mode, alpha = setting.split(":")
    casc = c.experiment.csae.cascade
    casc.coupling = "raw" if mode == "bilateral" else mode
    casc.alphas = (float(alpha) if mode != "bilateral" else 1.0,)
    run = "csae_bilateral" if mode == "bilateral" else "csae_full"
    t0 = time.time()
    runs = suite.train_runs(c, [run], tr, _SEED.value, log=lambda m: None)
    s = suite.evaluate(run, c, runs, te, truth)
    model, params, state, last = runs[run]
    from csae_jax.evaluation import codes as codes_lib
    from csae_jax.evaluation import subjects
    subj = subjects.from_model(model, params, state)
    fired = codes_lib.run_pass(subj, te, codes_lib.PassOptions(coactivation=False)).fired
    w = np.asarray(params[0]["W_dec"], np.float64)[fired]
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    leaves = truth.leaf_dirs / np.linalg.norm(truth.leaf_dirs, axis=1, keepdims=True)
    par = truth.parent_dirs / np.linalg.norm(truth.parent_dirs, axis=1, keepdims=True)
    parent_like = float(np.mean((w @ par.T).max(1) > (w @ leaves.T).max(1)))
    row = dict(regime=_REGIME.value, seed=_SEED.value, n1=_N1.value, steps=_STEPS.value,
               batch_size=_BATCH.value, start=_START.value,
               k_anneal_frac=float(c.experiment.csae.cascade.k_anneal_frac),
               setting=setting, children=s["children_recovered"], parent_ari=s["parent_ari"],
               fired=int(fired.sum()), parent_like=parent_like,
               distinct_dirs=scoring.distinct_directions(w), raw_ratio=float(
                   last.get("l2/coupling_raw_ratio", np.nan)), l1_fvu=float(last["l1/fvu"]),
               seconds=round(time.time() - t0, 1))
    print(json.dumps(row), flush=True)
    with open(_OUT.value, "a") as f:
      f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
  app.run(main)
