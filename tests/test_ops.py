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
