"""Level-2 pilots on one generated regime and seed (docs/hierarchy_quality.md, "Level-2 re-seeding").

  python -m bench.level2_pilot hard 10 4000 '{"reseed_every": 250, "reseed_until": 2000}' \
      csae_full,hac

Arguments: regime, seed, steps, a JSON object of overrides (cascade.Config fields; "l2.NAME" for
a Level-2 family field, null deletes it; "c.NAME" for a benchmark config field such as c.n2 or
c.abstain.parent_min_children) and the benchmark methods to score. Everything else is
configs/benchmark_hierarchy.py. Prints one JSON line per method (children recovered, parent ARI,
parent accuracy, seconds). Use non-benchmark seeds (the benchmark's are 0, 1, 2).
"""
from __future__ import annotations

import json
import os
import sys
import time

from configs import benchmark_hierarchy
from csae_jax.benchmarks import generators as gen
from csae_jax.benchmarks import suite


def config(steps: int, over: dict):
  c = benchmark_hierarchy.get_config()
  c.steps = steps
  for k, v in over.items():
    if k.startswith("c."):       # a benchmark config field (n2, steps, abstain.NAME, ...)
      node, *path = [c] + k[2:].split(".")
      for name in path[:-1]:
        node = node[name]
      node[path[-1]] = v
    elif k.startswith("l2."):
      if v is None:
        del c.experiment.csae.level2[k[3:]]
      else:
        c.experiment.csae.level2[k[3:]] = v
    else:
      c.experiment.csae.cascade[k] = tuple(v) if isinstance(v, list) else v
  return c


def dataset(regime: str, seed: int):
  """(train, eval, truth) of one generated regime and seed, scaled as the benchmark scales them
  (generated under /tmp/level2_pilot_data on first use)."""
  d = f"/tmp/level2_pilot_data/{regime}_s{seed}"
  if not os.path.exists(os.path.join(d, "truth.npz")):
    suite.write_dataset(gen.make_dataset(gen.regime_config(regime, seed)), d, 0.2, seed)
  return suite.load_scaled_dataset(d)


def main(argv):
  regime, seed, steps = argv[1], int(argv[2]), int(argv[3])
  over = json.loads(argv[4]) if len(argv) > 4 else {}
  methods = argv[5].split(",") if len(argv) > 5 else ["csae_full"]
  c = config(steps, over)
  tr, te, truth = dataset(regime, seed)
  t0 = time.time()
  needed = sorted({r for m in methods for r in suite.RUNS_OF[m]})
  runs = suite.train_runs(c, needed, tr, seed, log=lambda m: None)
  for m in methods:
    s = suite.evaluate(m, c, runs, te, truth)
    print(json.dumps(dict(regime=regime, seed=seed, steps=steps, over=over, method=m,
                          children=round(s["children_recovered"], 3),
                          ari=round(s["parent_ari"], 3), acc=round(s["parent_accuracy"], 3),
                          orphan_abstain=s.get("orphan_abstain"),
                          child_abstain=round(s["child_abstain"], 3),
                          secs=round(time.time() - t0))), flush=True)


if __name__ == "__main__":
  main(sys.argv)
