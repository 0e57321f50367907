"""Exact top-k selections (SPEC 2.2, 2.3) against NumPy, ties included; the safe power."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from csae_jax import ops


@pytest.mark.parametrize("k", [1, 3, 7, 40, 96])
def test_batch_topk_matches_numpy(k):
  z = np.abs(np.random.default_rng(k).normal(size=(8, 12))).astype(np.float32)
  m = np.asarray(jax.jit(ops.topk_mask)(jnp.asarray(z), k))
  assert m.sum() == k
  want = np.sort(z.ravel())[::-1][:k]
  np.testing.assert_array_equal(np.sort(z[m])[::-1], want)


def test_batch_topk_exact_count_with_ties_and_zeros():
  z = np.zeros((6, 10), np.float32)
  z[0, :4] = 2.0
  z[1, :5] = 1.0          # five tied values straddle the cut
  for k in (4, 6, 9, 20):
    m = np.asarray(ops.topk_mask(jnp.asarray(z), k))
    assert m.sum() == k
    assert m[0, :4].all()
    assert (z[m] >= min(np.sort(z.ravel())[::-1][k - 1], 2.0)).all()


def test_masked_rows_are_never_selected():
  z = np.abs(np.random.default_rng(0).normal(size=(6, 5))).astype(np.float32)
  valid = np.array([True, False, True, False, False, True])[:, None]
  m = np.asarray(ops.topk_mask(jnp.asarray(z), 6, valid=jnp.asarray(valid)))
  assert m.sum() == 6 and not m[~valid[:, 0]].any()
  # Fewer valid entries than k: keep all valid ones.
  m = np.asarray(ops.topk_mask(jnp.asarray(z), 100, valid=jnp.asarray(valid)))
  assert m.sum() == 15 and m[valid[:, 0]].all()


def test_traced_k_and_zero_k():
  z = jnp.asarray(np.abs(np.random.default_rng(1).normal(size=(4, 9))), jnp.float32)
  f = jax.jit(lambda z, k: ops.topk_mask(z, k, axis=-1))
  for k in (0, 2, 9):
    m = np.asarray(f(z, k))
    assert (m.sum(1) == k).all()
    if k:
      kth = np.sort(np.asarray(z), 1)[:, ::-1][:, k - 1]
      assert (np.asarray(z)[m].reshape(4, k).min(1) == kth).all()


def test_row_topk_static_matches_bisection():
  z = jnp.asarray(np.abs(np.random.default_rng(2).normal(size=(32, 50))), jnp.float32)
  a = np.asarray(ops.row_topk_mask(z, 5))
  b = np.asarray(ops.topk_mask(z, jnp.int32(5), axis=-1))
  np.testing.assert_array_equal(a, b)


def test_no_sort_in_compiled_selection():
  """XLA:CPU turns top_k()[..., -1] into a full sort; ours must compile without sort."""
  z = jnp.ones((64, 256), jnp.float32)
  for fn in (lambda z: ops.topk_mask(z, 64), lambda z: ops.row_topk_mask(z, 8),
             lambda z: ops.batch_topk_mask(z, 64, row_cap=4)):
    hlo = jax.jit(fn).lower(z).compile().as_text()
    assert "sort(" not in hlo


def test_safe_pow_finite_gradient_at_zero():
  g = jax.grad(lambda f: ops.safe_pow(f, 0.3).sum())(jnp.array([0.0, 0.0, 2.0]))
  assert np.isfinite(np.asarray(g)).all() and float(g[0]) == 0.0
  np.testing.assert_allclose(float(g[2]), 0.3 * 2.0 ** -0.7, rtol=1e-6)


@pytest.mark.parametrize("case", ["random", "saturated_row", "masked", "annealing_k", "ties"])
def test_candidate_batch_topk_equals_full_bisection(case):
  rng = np.random.default_rng(7)
  z = np.abs(rng.normal(size=(16, 40))).astype(np.float32)
  valid, k = None, 16 * 3
  if case == "saturated_row":
    z[5] += 10.0                      # one row holds far more than 4 x its share of winners
  if case == "masked":
    valid = jnp.asarray(rng.random(16) < 0.6)[:, None]
    k = int(valid.sum()) * 3
  if case == "annealing_k":
    k = 16 * 30                       # K beyond all candidates: must fall back
  if case == "ties":
    z[:, :20] = 1.0
  want = np.asarray(ops.topk_mask(jnp.asarray(z), k, valid=valid))
  got = np.asarray(jax.jit(lambda z: ops.batch_topk_mask(z, k, valid=valid, row_cap=12))(
      jnp.asarray(z)))
  assert got.sum() == want.sum()
  if case != "ties":                  # with ties any exactly-k subset of the tied values is right
    np.testing.assert_array_equal(got, want)
  else:
    np.testing.assert_array_equal(np.sort(z[got]), np.sort(z[want]))


def _np_topk_values(z, k, axis):
  """The multiset of the k largest values (NumPy float64), per row or over the whole array."""
  if axis is None:
    return np.sort(z.ravel())[::-1][:k]
  return np.sort(z, axis=1)[:, ::-1][:, :k]


def test_selection_exact_over_many_seeds_with_ties_and_zeros():
  """Randomised against NumPy: values from a small grid (ties everywhere, many exact zeros) and
  continuous values of every magnitude. A bisection one pass short of 31 is off by one bit for
  some thresholds and then selects the whole tie group or a wrong set."""
  fb = jax.jit(lambda z, k: ops.topk_mask(z, k))
  fr = jax.jit(lambda z, k: ops.topk_mask(z, k, axis=-1))
  for seed in range(300):
    rng = np.random.default_rng(seed)
    b, n = 4, 10                          # one shape: two compilations in all
    kind = seed % 3
    if kind == 0:
      z = rng.integers(0, 4, size=(b, n)) * rng.choice([0.25, 1.5, 3.0, 1e-3])
    elif kind == 1:
      z = np.abs(rng.normal(size=(b, n))) * 10.0 ** rng.integers(-30, 30)
      z[rng.random((b, n)) < 0.3] = 0.0
    else:
      z = rng.choice(np.abs(rng.normal(size=3)) * 10.0 ** rng.integers(-20, 20, 3), size=(b, n))
    z = z.astype(np.float32)
    kb = int(rng.integers(0, b * n + 1))
    m = np.asarray(fb(jnp.asarray(z), kb))
    assert m.sum() == kb, seed
    np.testing.assert_array_equal(np.sort(z[m])[::-1], _np_topk_values(z, kb, None), str(seed))
    kr = int(rng.integers(0, n + 1))
    m = np.asarray(fr(jnp.asarray(z), kr))
    assert (m.sum(1) == kr).all(), seed
    got = np.sort(np.where(m, z, -1.0), axis=1)[:, ::-1][:, :kr]
    np.testing.assert_array_equal(got, _np_topk_values(z, kr, -1), str(seed))


def test_candidate_selection_with_a_tied_row_beyond_its_cap():
  """Row 0 has three 1.0s but only row_cap=2 candidates; the threshold is 1.0 and exactly 4 must
  be kept: 3, 2 and two of the three tied 1.0s (the candidates cannot show the third)."""
  z = jnp.asarray([[1.0, 1.0, 1.0, 0.0], [3.0, 2.0, 0.0, 0.0]], jnp.float32)
  m = np.asarray(jax.jit(lambda z: ops.batch_topk_mask(z, 4, row_cap=2))(z))
  assert m.sum() == 4
  assert m[1, :2].all() and m[0, :3].sum() == 2 and not m[:, 3].any()
  f = jax.jit(lambda z, k: ops.batch_topk_mask(z, k, row_cap=3))
  for seed in range(40):                   # the same shape of case, randomised
    rng = np.random.default_rng(seed)
    zz = np.abs(rng.normal(size=(6, 8))).astype(np.float32)
    tie = np.float32(rng.uniform(0.5, 1.5))
    zz[seed % 6, :5] = tie
    k = int((zz > tie).sum()) + int(rng.integers(1, 5))
    got = np.asarray(f(jnp.asarray(zz), k))
    assert got.sum() == k, seed
    np.testing.assert_array_equal(np.sort(zz[got])[::-1], _np_topk_values(zz, k, None))


def test_selection_at_the_largest_finite_float():
  """The bisection's upper end lies above every finite value, float32 max included."""
  big = np.finfo(np.float32).max
  z = np.array([[big, 1.0, big, 0.0], [2.0, big, 0.5, 0.0]], np.float32)
  for k in (1, 2, 3, 4):
    m = np.asarray(ops.topk_mask(jnp.asarray(z), k))
    assert m.sum() == k
    np.testing.assert_array_equal(np.sort(z[m])[::-1], _np_topk_values(z, k, None))
  m = np.asarray(ops.topk_mask(jnp.asarray(z), jnp.int32(1), axis=-1))
  np.testing.assert_array_equal(z[m], [big, big])


def test_row_topk_on_higher_rank_inputs():
  """Per-row selection is over the last axis for any leading shape (tokens x heads x n)."""
  z = np.abs(np.random.default_rng(9).normal(size=(3, 4, 7))).astype(np.float32)
  for k in (1, 3):
    m = np.asarray(ops.row_topk_mask(jnp.asarray(z), k))
    kth = np.sort(z, -1)[..., ::-1][..., k - 1:k]
    np.testing.assert_array_equal(m, z >= kth)
    assert (m.sum(-1) == k).all()
