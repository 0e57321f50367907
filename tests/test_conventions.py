"""Shared conventions (SPEC section 1)."""
import math

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

from csae_jax import conventions as cv


def test_geometric_median_matches_scipy():
  pts = np.random.default_rng(0).normal(size=(200, 5)) ** 3
  got = np.asarray(cv.geometric_median(jnp.asarray(pts, jnp.float32)), np.float64)
  f = lambda y: np.linalg.norm(pts - y, axis=1).sum()
  ref = minimize(f, pts.mean(0), method="Nelder-Mead",
                 options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000}).x
  assert f(got) <= f(ref) * (1 + 1e-5)
  np.testing.assert_allclose(got, ref, atol=2e-3)


def test_decoder_projection_and_unit_norm():
  rng = np.random.default_rng(0)
  w = cv.unit_rows(jnp.asarray(rng.normal(size=(6, 4)), jnp.float32))
  params = {"W_dec": w, "b_dec": jnp.zeros(4)}
  g = {"W_dec": jnp.asarray(rng.normal(size=(6, 4)), jnp.float32), "b_dec": jnp.ones(4)}
  tx = cv.project_decoder_grads(cv.decoder_mask)
  out, _ = tx.update(g, tx.init(params), params)
  np.testing.assert_allclose(np.sum(np.asarray(out["W_dec"]) * np.asarray(w), 1), 0, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(out["b_dec"]), np.ones(4))
  gw, ww = np.asarray(g["W_dec"], np.float64), np.asarray(w, np.float64)
  np.testing.assert_allclose(np.asarray(out["W_dec"]),
                             gw - np.sum(gw * ww, 1, keepdims=True) * ww, atol=1e-6)


def test_optimizer_is_clip_then_adam():
  """Two steps against a float64 clip->Adam reference; without the clip, step 2 would differ."""
  params = {"W_dec": cv.unit_rows(jnp.ones((2, 3))), "b_dec": jnp.zeros(3)}
  opt = cv.make_optimizer(lambda s: 0.1, cv.decoder_mask)
  grads = [np.array([30.0, 40.0, 0.0]), np.array([0.3, -0.4, 0.2])]
  state = opt.init(params)
  m = v = np.zeros(3)
  for t, g in enumerate(grads, 1):
    upd, state = opt.update({"W_dec": jnp.zeros((2, 3)), "b_dec": jnp.asarray(g, jnp.float32)},
                            state, params)
    gc = g * min(1.0, 1.0 / np.linalg.norm(g))
    m = 0.9 * m + 0.1 * gc
    v = 0.999 * v + 0.001 * gc ** 2
    want = -0.1 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    np.testing.assert_allclose(np.asarray(upd["b_dec"]), want, rtol=1e-4, atol=1e-7)
  unclipped_m = 0.9 * 0.1 * grads[0] + 0.1 * grads[1]
  assert not np.allclose(m, unclipped_m)


def test_lr_schedule_shape():
  s = cv.lr_schedule(1.0, total_steps=1000, warmup_steps=100)
  assert abs(float(s(0)) - 0.01) < 1e-7 and float(s(99)) == 1.0
  assert float(s(500)) == 1.0 and float(s(800)) == 1.0
  np.testing.assert_allclose(float(s(900)), 0.5, rtol=1e-6)
  assert float(s(1000)) == 0.0
  assert math.isclose(cv.default_lr(2 ** 14), 2e-4) and math.isclose(cv.default_lr(2 ** 16), 1e-4)


def test_input_scale():
  xs = [np.full((4, 3), 2.0), np.full((2, 3), 1.0)]
  assert math.isclose(cv.estimate_input_scale(xs), math.sqrt((4 * 12 + 2 * 3) / 6))
  with pytest.raises(ValueError, match="no tokens"):
    cv.estimate_input_scale([])


def test_recon_metrics_against_numpy():
  rng = np.random.default_rng(0)
  x, xh, c = rng.normal(size=(10, 4)), rng.normal(size=(10, 4)), rng.normal(size=(10, 6))
  m = cv.recon_metrics(jnp.asarray(x), jnp.asarray(xh), jnp.asarray(c))
  fvu = ((x - xh) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
  np.testing.assert_allclose(float(m["fvu"]), fvu, rtol=1e-5)
  np.testing.assert_allclose(float(m["l0"]), (c > 0).sum(1).mean(), rtol=1e-6)


def test_dead_counter():
  t = jnp.array([0, 5, 7], jnp.int32)
  codes = jnp.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
  np.testing.assert_array_equal(np.asarray(cv.update_fired(t, codes)), [0, 7, 9])
  assert float(cv.dead_fraction(jnp.array([0, 7, 9]), 8)) == pytest.approx(1 / 3)


@pytest.mark.parametrize("bad, msg", [
    (np.zeros((3, 5)), "dimension 5 but the model expects d=4"),
    (np.zeros(4), "2-D array"),
    (np.array([[0, 1, np.nan, 0]]), "NaN/Inf"),
    (np.array([[0, 1, np.inf, 0]]), "row 0, column 2"),
    (np.zeros((3, 4), np.int32), "floating point"),
])
def test_activation_validation(bad, msg):
  with pytest.raises(ValueError, match=msg):
    cv.check_activations(bad, 4)


def test_dead_counter_ignores_masked_rows():
  """Only marked rows count: a latent firing in an unmarked row is not reset, and the counters
  grow by the number of marked rows (hand values)."""
  t = jnp.array([3, 3, 3, 3], jnp.int32)
  codes = jnp.array([[0.0, 2.0, 0.0, 0.0],      # marked: latent 1 fires
                     [5.0, 0.0, 0.0, 0.0],      # unmarked: latent 0 does not count
                     [0.0, 0.0, 0.0, 0.0],      # marked
                     [0.0, 0.0, 1.0, 0.0]])     # unmarked
  mask = jnp.array([True, False, True, False])
  np.testing.assert_array_equal(np.asarray(cv.update_fired(t, codes, mask)), [5, 0, 5, 5])
  np.testing.assert_array_equal(np.asarray(cv.update_fired(t, codes)), [0, 0, 0, 7])
  none = jnp.zeros(4, bool)
  np.testing.assert_array_equal(np.asarray(cv.update_fired(t, codes, none)), [3, 3, 3, 3])


def test_dead_fraction_boundary_is_inclusive():
  """Dead = no firing for >= window tokens (SPEC 2.2)."""
  assert float(cv.dead_fraction(jnp.array([7, 8, 9, 0]), 8)) == 0.5
  assert float(cv.dead_fraction(jnp.array([7, 7]), 8)) == 0.0


def test_input_scale_lopsided_batches():
  """s^2 = total squared norm / number of tokens, with batches whose rows != columns."""
  rng = np.random.default_rng(0)
  xs = [rng.normal(size=(5, 2)), rng.normal(size=(1, 2)), rng.normal(size=(9, 2))]
  allx = np.concatenate(xs)
  want = math.sqrt((allx ** 2).sum() / 15)
  assert cv.estimate_input_scale(xs) == pytest.approx(want, rel=1e-12)
  with pytest.raises(ValueError, match="positive and finite"):
    cv.estimate_input_scale([np.zeros((3, 2))])
