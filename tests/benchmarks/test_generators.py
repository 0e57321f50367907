"""Benchmark generators: truth files consistent with the tokens, on hand-checkable small cases."""
import os

import numpy as np
import pytest

from csae_jax.benchmarks import generators as gen

SMALL = dict(d=8, n_parents=4, children_per_parent=2, n_images=6, tokens_per_image=5,
             active_per_token=2, noise=0.0)


def small(regime, **kw):
  return gen.make_dataset(gen.regime_config(regime, 3, **{**SMALL, **kw}))


@pytest.mark.parametrize("regime", gen.REGIMES)
def test_tokens_are_the_planted_mixtures(regime):
  ds = small(regime, n_orphans=2 if regime == "hard" else 0)
  t = ds.truth
  np.testing.assert_allclose(ds.tokens, ds.codes @ t.leaf_dirs + ds.offset, atol=1e-5)
  assert np.all(np.sum(ds.codes > 0, 1) == 2) and np.all(ds.codes >= 0)
  np.testing.assert_allclose(np.linalg.norm(t.leaf_dirs, axis=1), 1.0, atol=1e-12)
  # every child = its parent + an own component of norm .9 orthogonal to it: cos = 1/sqrt(1.81)
  ch = t.leaf_parent >= 0
  cos = np.sum(t.leaf_dirs[ch] * t.parent_dirs[t.leaf_parent[ch]], 1)
  np.testing.assert_allclose(cos, 1 / np.sqrt(1.81), atol=1e-12)
  assert len(ds.token_offsets) == 7 and ds.token_offsets[-1] == len(ds.tokens)


def test_cofire_tokens_stay_in_family_and_geometric_images_have_none():
  ds = small("cofire", in_family_prob=1.0)
  img = np.repeat(np.arange(6), 5)
  fam = ds.truth.leaf_parent[np.nonzero(ds.codes)[1].reshape(-1, 2)]
  assert np.all(fam == ds.image_parent[img][:, None])
  geo = small("geometric")
  assert np.all(geo.image_parent == -1)


def test_geometric_siblings_co_occur_at_chance():
  ds = gen.make_dataset(gen.regime_config("geometric", 0, d=16, n_parents=6, n_images=200))
  lp = ds.truth.leaf_parent
  pairs = np.nonzero(ds.codes)[1].reshape(-1, 3)
  same = np.mean([lp[a] == lp[b] for row in pairs for a, b in ((row[0], row[1]),
                                                                (row[0], row[2]),
                                                                (row[1], row[2]))])
  chance = 3 / 23        # other members of the family / other leaves
  assert abs(same - chance) < 0.02
  cof = gen.make_dataset(gen.regime_config("cofire", 0, d=16, n_parents=6, n_images=200))
  pairs = np.nonzero(cof.codes)[1].reshape(-1, 3)
  same_c = np.mean([cof.truth.leaf_parent[r[0]] == cof.truth.leaf_parent[r[1]] for r in pairs])
  assert same_c > 0.5


def test_three_levels_and_hard_structure():
  t3 = small("three", n_grandparents=2).truth
  np.testing.assert_array_equal(t3.parent_parent, [0, 0, 1, 1])
  cos = np.sum(t3.parent_dirs * t3.grand_dirs[t3.parent_parent], 1)
  np.testing.assert_allclose(cos, 1 / np.sqrt(1.81), atol=1e-12)
  th = small("hard", n_orphans=3, children_per_parent=4).truth
  assert np.sum(th.leaf_parent == -1) == 3 and np.all(th.leaf_parent[-3:] == -1)
  sizes = np.bincount(th.leaf_parent[th.leaf_parent >= 0], minlength=4)
  assert np.all((sizes >= 2) & (sizes <= 7))
  pair_cos = np.sum(th.parent_dirs[0::2] * th.parent_dirs[1::2], 1)
  np.testing.assert_allclose(pair_cos, 0.5, atol=1e-12)


def test_truth_roundtrip_and_bad_files(tmp_path):
  t = small("three", n_grandparents=2).truth
  p = os.path.join(tmp_path, "truth.npz")
  t.save(p)
  u = gen.Truth.load(p)
  np.testing.assert_array_equal(u.leaf_parent, t.leaf_parent)
  np.testing.assert_allclose(u.leaf_dirs, t.leaf_dirs)
  np.testing.assert_array_equal(u.parent_parent, t.parent_parent)
  assert u.regime == "three" and u.config["n_grandparents"] == 2
  bad = os.path.join(tmp_path, "bad.npz")
  np.savez(bad, leaf_dirs=t.leaf_dirs)
  with pytest.raises(ValueError, match="not a truth file"):
    gen.Truth.load(bad)
  np.savez(bad, leaf_dirs=t.leaf_dirs, leaf_parent=t.leaf_parent + 10,
           parent_dirs=t.parent_dirs)
  with pytest.raises(ValueError, match="leaf_parent"):
    gen.Truth.load(bad)
  with pytest.raises(ValueError, match="regime"):
    gen.regime_config("nope")
