"""Scale-free coupling (csae_jax.coupling): the rescaled gradient against separately computed
level gradients (jax.grad of each term alone, combined in float64 NumPy), and the raw mode."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from csae_jax import cascade, coupling, models
from csae_jax import codes as codes_lib
from csae_jax.families import batchtopk

B, D, N1, N2 = 32, 8, 12, 4


def build(coupling_mode, alpha, sg="full"):
  lv = [dict(family="batchtopk", n=N1, k=2, aux_k=None),
        dict(family="batchtopk", n=N2, k=1, aux_k=None)]
  return models.build_model(dict(name="cascade", d=D, levels=lv, cascade=dict(
      alphas=[alpha], stop_gradient=sg, coupling=coupling_mode, k_anneal_frac=0.0)))


def setup(seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(B, D)), jnp.float32)
  m = build("ratio", 0.25)
  params, state = m.init(jax.random.PRNGKey(seed), x)
  return x, params, state


def separate_grads(model, params, state, x):
  """(g_own, g_up) on W_dec1: Level-1 term alone, and the Level-2 term alone w.r.t. its input."""
  cfg = model.cfg
  fam = batchtopk

  def l1(w):
    p0 = dict(params[0], W_dec=w)
    return fam.loss(p0, state[0], x, cfg.levels[0].cfg, step=0)[0]

  _, out = fam.loss(params[0], state[0], x, cfg.levels[0].cfg, step=0)
  live = codes_lib.active(out.codes, None, cfg.live_eps)

  def l2(a):
    tot, _, _ = cascade.upper_levels(params, state, live, cfg.replace(coupling="ratio"), step=0,
                                     inputs=(a,))
    return tot

  w = params[0]["W_dec"]
  return np.asarray(jax.grad(l1)(w), np.float64), np.asarray(jax.grad(l2)(w), np.float64)


def tangent(g, w):
  w = np.asarray(w, np.float64)
  return g - np.sum(g * w, -1, keepdims=True) * w


@pytest.mark.parametrize("ratio", [0.0, 0.1, 2.0])
def test_ratio_coupling_matches_separate_gradients(ratio):
  x, params, state = setup()
  model = build("ratio", ratio)
  g_own, g_up = separate_grads(model, params, state, x)
  w = params[0]["W_dec"]
  n_own, n_up = np.linalg.norm(tangent(g_own, w)), np.linalg.norm(tangent(g_up, w))
  assert n_own > 0 and n_up > 0
  want = g_own + ratio * n_own / n_up * g_up
  (_, out), grads = coupling.value_and_grad(model, params, state, x, jnp.asarray(0))
  got = np.asarray(grads[0]["W_dec"], np.float64)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  # the tangent ratio the optimizer receives is the target
  got_up = got - g_own
  np.testing.assert_allclose(np.linalg.norm(tangent(got_up, w)) / n_own, ratio, rtol=1e-4,
                             atol=1e-7)
  np.testing.assert_allclose(float(out.metrics["l2/coupling_raw_ratio"]), n_up / n_own, rtol=1e-4)
  # Level-2 parameters get the unweighted L2 gradient
  def l2_own(p1):
    ps = (params[0], p1)
    return cascade.loss(ps, state, x, model.cfg, step=0)[0]
  np.testing.assert_allclose(np.asarray(grads[1]["W_enc"]),
                             np.asarray(jax.grad(l2_own)(params[1])["W_enc"]), rtol=1e-4,
                             atol=1e-6)


def test_raw_coupling_is_the_plain_gradient_and_logs_alpha_ratio():
  x, params, state = setup(1)
  alpha = 0.7
  model = build("raw", alpha)
  g_own, g_up = separate_grads(model, params, state, x)
  (_, out), grads = coupling.value_and_grad(model, params, state, x, jnp.asarray(0))
  np.testing.assert_allclose(np.asarray(grads[0]["W_dec"], np.float64), g_own + alpha * g_up,
                             rtol=1e-4, atol=1e-6)
  plain = jax.grad(lambda p: model.loss(p, state, x, step=0)[0])(params)
  np.testing.assert_allclose(grads[0]["W_dec"], plain[0]["W_dec"], rtol=1e-5, atol=1e-7)
  w = params[0]["W_dec"]
  want = alpha * np.linalg.norm(tangent(g_up, w)) / np.linalg.norm(tangent(g_own, w))
  np.testing.assert_allclose(float(out.metrics["l2/coupling_raw_ratio"]), want, rtol=1e-4)


def test_bilateral_has_no_pull_and_ratio_zero():
  x, params, state = setup(2)
  model = build("ratio", 0.5, sg="bilateral")
  (_, out), grads = coupling.value_and_grad(model, params, state, x, jnp.asarray(0))
  assert float(out.metrics["l2/coupling_raw_ratio"]) == 0.0
  assert float(out.metrics["l2/coupling_ratio"]) == 0.0


def test_bad_coupling_rejected():
  with pytest.raises(ValueError, match="coupling"):
    build("bogus", 0.1)
  with pytest.raises(ValueError, match="alphas must be finite numbers >= 0"):
    build("ratio", -0.1)
