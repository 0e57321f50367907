"""Purity, ARI and planted recovery against hand values and scikit-learn."""
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from csae_jax.evaluation import recovery


def test_purity_hand_case():
  true = np.array([0, 0, 1, 1, 1, 2])
  pred = np.array([5, 5, 5, 7, 7, 9])   # cluster 5: {0,0,1} -> 2; 7: {1,1} -> 2; 9: {2} -> 1
  assert recovery.purity(true, pred) == pytest.approx(5 / 6)


def test_ari_matches_sklearn_and_limits():
  rng = np.random.default_rng(0)
  for _ in range(5):
    t, p = rng.integers(0, 4, 50), rng.integers(0, 6, 50)
    assert recovery.adjusted_rand_index(t, p) == pytest.approx(adjusted_rand_score(t, p))
  t = np.array([0, 0, 1, 1, 2])
  assert recovery.adjusted_rand_index(t, t + 10) == pytest.approx(1.0)


def test_random_purity_is_below_perfect_purity():
  true = np.repeat(np.arange(4), 10)
  assert recovery.purity(true, true) == 1.0
  assert recovery.random_purity(true, true, trials=50) < 0.6


def test_score_recovery_on_exact_planted_atoms():
  rng = np.random.default_rng(0)
  child = rng.normal(size=(6, 8))
  child_parent = np.array([0, 0, 0, 1, 1, 1])
  atoms = np.concatenate([child, rng.normal(size=(2, 8))])   # 6 exact + 2 random atoms
  learned = np.array([3, 3, 3, 4, 4, 4, 3, -1])
  r = recovery.score_recovery(atoms, learned, child, child_parent)
  assert r["mean_best_child_cos"] == pytest.approx(1.0)
  assert r["children_recovered"] == 1.0
  assert r["atoms_scored"] >= 6
  wrong = np.array([3, 4, 3, 4, 3, 4, -1, -1])
  r2 = recovery.score_recovery(atoms, wrong, child, child_parent,
                               keep=np.r_[np.ones(6, bool), False, False])
  assert r2["atoms_scored"] == 6
  assert r2["parent_purity"] == pytest.approx(4 / 6)
  assert r["parent_purity"] >= r2["parent_purity"]


def test_purity_lopsided_cases_tell_the_axes_apart():
  """Purity = sum over predicted groups of their majority true count / n (rows: true labels).
  Hand cases where swapping the contingency axes gives another value."""
  assert recovery.purity(np.zeros(4, int), np.arange(4)) == 1.0        # swapped: 1/4
  assert recovery.purity(np.arange(4), np.zeros(4, int)) == 0.25       # swapped: 1
  true = np.array([0, 0, 0, 1, 2, 2])
  pred = np.array([7, 7, 7, 7, 9, 9])   # 7: {0,0,0,1} -> 3; 9: {2,2} -> 2  => 5/6 (swapped 6/6)
  assert recovery.purity(true, pred) == 5 / 6
  np.testing.assert_array_equal(recovery.contingency(true, pred), [[3, 0], [1, 0], [0, 2]])


def test_purity_matches_a_direct_count_over_many_seeds():
  for seed in range(50):
    rng = np.random.default_rng(seed)
    true, pred = rng.integers(0, 3, 20), rng.integers(0, 6, 20)
    want = sum(np.bincount(true[pred == g]).max() for g in np.unique(pred)) / 20
    assert recovery.purity(true, pred) == pytest.approx(want, abs=1e-12)
