"""Benchmark scoring (csae_jax.benchmarks.scoring) against hand-computed values."""
import numpy as np
import pytest

from csae_jax.benchmarks import generators as gen
from csae_jax.benchmarks import scoring


def hand_truth():
  eye = np.eye(5)
  return gen.Truth(leaf_dirs=eye, leaf_parent=np.array([0, 0, 1, 1, -1]),
                   parent_dirs=np.ones((2, 5)), parent_parent=np.array([-1, -1]),
                   grand_dirs=np.zeros((0, 5)), regime="hand", config={})


def hand_atoms():
  e = np.eye(5)
  junk = (e[0] + e[1]) / np.sqrt(2)   # cos .707 with two leaves: unmatched
  return np.stack([e[0], e[1], e[2], e[3], e[4], e[0], junk])


def test_hand_case():
  pm = np.array([0, 0, 1, 0, -1, 0, 1])
  fired = np.array([1, 1, 1, 1, 1, 1, 0], bool)
  s = scoring.score(hand_atoms(), pm, hand_truth(), fired=fired)
  assert s["children_recovered"] == 1.0 and s["orphans_recovered"] == 1.0
  assert s["atoms_scored"] == 5                  # atoms 0, 1, 2, 3 and the duplicate 5
  # groups: learned 0 = atoms {0,1,3,5} truth [0,0,1,0] -> 3 right; learned 1 = {2} -> 1 right
  assert s["parent_accuracy"] == pytest.approx(4 / 5)
  # contingency [[3,0],[1,1]]: sum C2 = 3, rows 3+1 = 4, cols 6+0 = 6, pairs 10
  # ARI = (3 - 24/10) / (5 - 24/10) = .6 / 2.6
  assert s["parent_ari"] == pytest.approx(0.6 / 2.6)
  assert s["orphan_abstain"] == 1.0 and s["child_abstain"] == 0.0
  assert s["dead_fraction"] == pytest.approx(1 / 7)
  assert s["duplicates"] == pytest.approx(1 / 7)  # 6 matched atoms, 5 distinct leaves


def test_abstention_on_children_is_penalised():
  pm = np.array([0, 0, 1, -1, -1, 0, 1])
  s = scoring.score(hand_atoms(), pm, hand_truth())
  # pred with singleton [0,0,1,2,0] vs truth [0,0,1,1,0]: C2 sum 3, rows 4, cols 3, pairs 10
  assert s["parent_ari"] == pytest.approx((3 - 1.2) / (3.5 - 1.2))
  assert s["parent_accuracy"] == pytest.approx(4 / 5)   # the abstained child counts as wrong
  assert s["child_abstain"] == pytest.approx(1 / 5)
  assert np.isnan(s["dead_fraction"])


def test_unfired_atoms_do_not_match_and_chance_is_lower():
  pm = np.array([0, 0, 1, 1, -1, 0, 1])
  fired = np.array([0, 1, 1, 1, 1, 0, 1], bool)   # both copies of leaf 0 dead
  s = scoring.score(hand_atoms(), pm, hand_truth(), fired=fired)
  assert s["children_recovered"] == pytest.approx(3 / 4)
  assert s["parent_ari"] == pytest.approx(1.0) and s["parent_accuracy"] == 1.0
  assert s["parent_accuracy_chance"] < 1.0


def test_three_level_grand_ari_and_bad_shapes():
  t = hand_truth()
  t.parent_parent = np.array([0, 0])
  s = scoring.score(hand_atoms(), np.array([0, 0, 1, 1, -1, 0, 1]), t)
  # every child has grandparent 0; learned groups {0,1,5} and {2,3}: ARI vs one group = 0
  assert s["grand_ari"] == pytest.approx(0.0)
  with pytest.raises(ValueError, match="parent_map"):
    scoring.score(hand_atoms(), np.zeros(3, int), t)
  with pytest.raises(ValueError, match="d="):
    scoring.score(np.ones((2, 4)), np.zeros(2, int), t)
