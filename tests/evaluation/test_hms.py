"""Prototypes and HMS (SPEC 4) against hand-computed values and float64 loop references."""
import itertools

import numpy as np
import pytest

from csae_jax.evaluation import hms


def test_minmax_weights_hand_case_with_constant_unit():
  v = np.array([[0.0, 1.0, 0.0], [2.0, 1.0, 0.0], [4.0, 1.0, 5e-9]])
  a = hms.minmax_weights(v)
  np.testing.assert_allclose(a[:, 0], [0.0, 0.5, 1.0])
  np.testing.assert_allclose(a[:, 1], [1.0, 1.0, 1.0])   # constant: uniform weights
  np.testing.assert_allclose(a[:, 2], [1.0, 1.0, 1.0])   # range 5e-9 <= 1e-8: uniform


def test_prototypes_hand_case():
  v = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])
  e = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
  r = hms.prototypes(v, e)
  # unit 0: (0 E0 + .5 E1 + 1 E2) / (1.5 + 1e-8) = (1, 1.5)/1.5 -> direction (1, 1.5)
  np.testing.assert_allclose(r[0], np.array([1.0, 1.5]) / np.hypot(1.0, 1.5), rtol=1e-6)
  # unit 1 is constant: the uniform mean embedding (2/3, 2/3) -> (1, 1)/sqrt(2)
  np.testing.assert_allclose(r[1], [2 ** -0.5, 2 ** -0.5], rtol=1e-6)


def test_prototypes_match_float64_loop_and_blocks():
  rng = np.random.default_rng(0)
  v = np.maximum(rng.normal(size=(30, 11)), 0)
  v[:, 3] = 0.7                       # a constant unit
  e = rng.normal(size=(30, 5))
  ref = np.zeros((11, 5))
  for j in range(11):
    col = v[:, j]
    rng_j = col.max() - col.min()
    a = np.ones(30) if rng_j <= 1e-8 else (col - col.min()) / rng_j
    rj = sum(a[i] * e[i] for i in range(30)) / (a.sum() + 1e-8)
    ref[j] = rj / np.linalg.norm(rj)
  np.testing.assert_allclose(hms.prototypes(v, e), ref, atol=1e-6)
  np.testing.assert_allclose(hms.prototypes(v, e, block=4), ref, atol=1e-6)


def test_hms_hand_case_with_edge_cases():
  r = np.array([[1.0, 0.0],     # parent 0
                [0.0, 1.0],     # parent 0       -> HMS(0) = cos = 0
                [1.0, 0.0],     # parent 1
                [0.6, 0.8],     # parent 1
                [0.0, 2.0],     # parent 1 (not unit: normalised) -> HMS(1) = (.6 + 0 + .8)/3
                [0.3, 0.4],     # parent 2: a single child -> NaN, count 1
                [5.0, 5.0]])    # no parent
  parent = np.array([0, 0, 1, 1, 1, 2, -1])
  h, count = hms.hms_per_parent(r, parent, n_parents=4)
  np.testing.assert_allclose(h[:2], [0.0, (0.6 + 0.0 + 0.8) / 3])
  assert np.isnan(h[2]) and np.isnan(h[3])
  np.testing.assert_array_equal(count, [2, 3, 1, 0])
  s = hms.summarize(h)
  assert s["count"] == 2
  np.testing.assert_allclose([s["mean"], s["median"], s["min"], s["max"]],
                             [0.7 / 3, 0.7 / 3, 0.0, 1.4 / 3])


def test_hms_matches_pairwise_float64_loop():
  rng = np.random.default_rng(1)
  r = rng.normal(size=(200, 7))
  parent = rng.integers(-1, 25, size=200)
  h, count = hms.hms_per_parent(r, parent, 25)
  ru = r / np.linalg.norm(r, axis=1, keepdims=True)
  for p in range(25):
    kids = np.flatnonzero(parent == p)
    assert count[p] == len(kids)
    if len(kids) < 2:
      assert np.isnan(h[p])
      continue
    cos = [ru[u] @ ru[v] for u, v in itertools.combinations(kids, 2)]
    assert h[p] == pytest.approx(np.mean(cos), abs=1e-12)


def test_summary_of_no_parents_is_nan_with_count_zero():
  s = hms.summarize(np.array([np.nan, np.nan]))
  assert s["count"] == 0 and np.isnan(s["mean"])


def test_hms_levels_three_levels_hand_case():
  r1 = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.6, 0.8]])
  pi2 = np.array([0, 0, 1, 1, 2])       # level-2 units 0, 1 have 2 children; unit 2 has one
  pi3 = np.array([0, 0, 0, 0])          # level-2 unit 3 has no children -> not a level-3 child
  out = hms.hms_levels(r1, [pi2, pi3], [4, 1])
  np.testing.assert_allclose(out[0]["hms"][:2], [1.0, 1.0])
  # Level-2 R: (1,0), (0,1), (.6,.8); level-3 HMS = mean(0, .6, .8)
  assert out[1]["hms"][0] == pytest.approx((0.0 + 0.6 + 0.8) / 3)
  np.testing.assert_array_equal(out[1]["count"], [3])
  np.testing.assert_array_equal(out[1]["parent"], [0, 0, 0, -1])


def test_hms_levels_keep_mask_drops_dead_children():
  r1 = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
  out = hms.hms_levels(r1, [np.array([0, 0, 0])], [1], keep1=np.array([True, False, True]))
  assert out[0]["hms"][0] == pytest.approx(1.0)
  np.testing.assert_array_equal(out[0]["parent"], [0, -1, 0])


def test_bad_shapes_raise():
  with pytest.raises(ValueError, match="parent map"):
    hms.hms_per_parent(np.ones((3, 2)), np.array([0, 1]), 2)
  with pytest.raises(ValueError, match="refers to unit 5"):
    hms.hms_per_parent(np.ones((2, 2)), np.array([0, 5]), 2)
  with pytest.raises(ValueError, match="embeddings must be"):
    hms.prototypes(np.ones((3, 2)), np.ones((4, 2)))
  with pytest.raises(ValueError, match="NaN"):
    hms.prototypes(np.ones((2, 2)), np.array([[1.0, np.nan], [0.0, 1.0]]))
