"""The hierarchy benchmark (csae_jax/benchmarks): every method x 4 regimes x 3 seeds.

  python -m launch.benchmark --config=configs/benchmark_hierarchy.py --workdir=/tmp/bench_h
  python -m launch.benchmark --config=configs/benchmark_hierarchy.py:paper ...  # BatchTopK Level 2

Expected (2026-12-03, ~30 min on 2 CPU cores): regime hard, CSAE full children .95 +- .03 and
parent ARI .91 +- .03 (>= .85 on every seed); HAC .93 / .85. Tables: docs/hierarchy_quality.md.

Regimes (csae_jax/benchmarks/generators.py): cofire (a), geometric (b), three (c), hard (d).
Methods are built as in the experiments runner (configs/experiments_planted.py: families,
thresholds, and the project's CSAE defaults: coupling "ratio", a re-seeded vq Level 2; ":paper"
takes the paper's BatchTopK Level 2 without re-seeding); sizes n1 192, n2 24, k 3/1.
Score your own data: --config.datasets=DIR1,DIR2 (each with data.npz and truth.npz).
Table and figures: docs/hierarchy_quality.md.
"""
import ml_collections

from configs import experiments_planted


def _planted_experiment(level2=None):
  return experiments_planted.get_config(level2)


def get_config(arg: str | None = None):
  c = ml_collections.ConfigDict()
  c.methods = ("pair,hac,spectral,matryoshka,stacked,csae_full,csae_partial,csae_bilateral,"
               "csae_full_abstain")
  c.regimes = "cofire,geometric,three,hard"
  c.seeds = "0,1,2"
  c.datasets = ""                  # comma-separated dataset dirs (data.npz + truth.npz) instead
  c.generator = ml_collections.ConfigDict()   # per-regime GenConfig overrides, e.g. hard.n_orphans
  for r in ("cofire", "geometric", "three", "hard"):
    c.generator[r] = ml_collections.ConfigDict()
  c.eval_fraction = 0.2
  c.n1, c.n2, c.k1, c.k2 = 192, 24, 3, 1
  c.steps = 4000                  # Level 1 of regime (d) needs ~4000 steps for .85 of its children
  c.batch_size = 1024
  c.lr = 3e-3
  c.warmup_steps = 20
  c.match_cos = 0.9
  # Parent abstention (the "CSAE full + abstention" row): the trained CSAE full, parents with
  # cascade.Config fields overridden by these (a unit best for one atom only is no parent).
  c.abstain = ml_collections.ConfigDict(dict(parent_min_children=2, parent_rel_min=0.0))
  e = _planted_experiment(arg)
  e.csae.cascade.level_start_steps = (200,)
  # k annealed from d over 10% of a short run cost Level 1 a fifth to a half of its children in the
  # pilots (docs/hierarchy_quality.md); the release anneals over 500M tokens.
  e.csae.cascade.k_anneal_frac = 0.0
  c.experiment = ml_collections.ConfigDict(dict(
      families=e.families, csae=e.csae, flat_level2_k=e.flat_level2_k, stacked_k2=e.stacked_k2))
  return c
