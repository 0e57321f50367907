"""Benchmark report: mean +- sd over seeds (sample sd), nan skipped, markdown rows per method."""
import numpy as np
import pytest

from csae_jax.benchmarks import report


def test_aggregate_and_markdown(tmp_path):
  res = [{"regime": "hard", "seed": s, "scores": {"pair": {"children_recovered": v,
                                                           "parent_ari": a}}}
         for s, v, a in ((0, 0.8, 0.5), (1, 0.9, float("nan")), (2, 1.0, 0.7))]
  agg = report.aggregate(res, ["pair"])
  mean, sd, n, _ = agg["hard"]["pair"]["children_recovered"]
  assert mean == pytest.approx(0.9) and sd == pytest.approx(0.1) and n == 3
  mean, sd, n, _ = agg["hard"]["pair"]["parent_ari"]
  assert mean == pytest.approx(0.6) and sd == pytest.approx(np.std([0.5, 0.7], ddof=1)) and n == 2
  md = report.write(res, ["pair"], str(tmp_path))
  assert "| BatchTopK pair (co-act.) | 0.90 ± 0.10 | 0.60 ± 0.14 |" in md
  assert (tmp_path / "plots" / "benchmark.png").stat().st_size > 0
  assert (tmp_path / "tables" / "benchmark.csv").read_text().startswith("regime,method")
