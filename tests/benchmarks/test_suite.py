"""Benchmark runner: config and dataset validation, and one tiny dataset end to end."""
import json
import os

import numpy as np
import pytest

from configs import benchmark_hierarchy
from csae_jax.benchmarks import generators as gen
from csae_jax.benchmarks import suite


def test_validate_rejects_bad_configs(tmp_path):
  c = benchmark_hierarchy.get_config()
  suite.validate(c)
  for key, val, msg in (("methods", "pair,nope", "unknown method"),
                        ("regimes", "cofire,zzz", "unknown regime"),
                        ("seeds", "0,x", "comma-separated integers")):
    bad = benchmark_hierarchy.get_config()
    bad[key] = val
    with pytest.raises(ValueError, match=msg):
      suite.validate(bad)
  with pytest.raises(ValueError, match="no data.npz"):
    suite.load_dataset(str(tmp_path))


def test_dataset_roundtrip_splits_by_image(tmp_path):
  ds = gen.make_dataset(gen.regime_config("cofire", 1, d=8, n_parents=3, n_images=10,
                                          tokens_per_image=4))
  suite.write_dataset(ds, str(tmp_path), 0.2, 1)
  tr, te, truth = suite.load_dataset(str(tmp_path))
  assert tr.num_images == 8 and te.num_images == 2
  assert tr.num_tokens + te.num_tokens == len(ds.tokens)
  rows = {tuple(r) for r in np.round(ds.tokens, 5)}
  assert all(tuple(r) in rows for r in np.round(te.tokens, 5))
  np.testing.assert_array_equal(truth.leaf_parent, ds.truth.leaf_parent)


@pytest.mark.slow
def test_tiny_suite_end_to_end(tmp_path):
  c = benchmark_hierarchy.get_config()
  c.methods = "pair,hac,csae_full,csae_full_abstain"
  c.regimes, c.seeds = "hard", "0"
  c.n1, c.n2, c.steps, c.batch_size = 48, 8, 60, 256
  c.generator.hard.update(dict(d=16, n_parents=4, n_images=40, tokens_per_image=16, n_orphans=3))
  out = suite.run_suite(c, str(tmp_path), log=lambda m: None)
  scores = out["results"][0]["scores"]
  for m in ("pair", "hac", "csae_full", "csae_full_abstain"):
    assert 0.0 <= scores[m]["children_recovered"] <= 1.0 and "parent_ari" in scores[m]
  assert scores["csae_full"]["children_recovered"] == scores["csae_full_abstain"][
      "children_recovered"]     # the same trained run
  assert "| CSAE full + abstention |" in out["table"]
  saved = json.loads((tmp_path / "results" / "hard_s0.json").read_text())
  assert saved["fingerprint"] == suite.fingerprint(c)
  mtime = os.path.getmtime(tmp_path / "results" / "hard_s0.json")
  suite.run_suite(c, str(tmp_path), log=lambda m: None)      # finished results are reused
  assert os.path.getmtime(tmp_path / "results" / "hard_s0.json") == mtime
