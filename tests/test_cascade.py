"""The cascade (SPEC section 3) against a float64 reference: masking, skip/all, stop-gradient modes,
level start, N levels."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from csae_jax import cascade, models, planted
from csae_jax import codes as codes_lib
from csae_jax import step as step_lib
from csae_jax.families import batchtopk
from tests.families import npref as R

B, D, N1, N2, K1, K2 = 16, 8, 12, 5, 2, 1
TOL = 1e-5


def build(stop_gradient="full", empty_live="skip", alpha=0.7, start=0, levels=2):
  lv = [dict(family="batchtopk", n=N1, k=K1, aux_k=None),
        dict(family="batchtopk", n=N2, k=K2, aux_k=None)]
  if levels == 3:
    lv.append(dict(family="batchtopk", n=3, k=1, aux_k=None))
  return models.build_model(dict(
      name="cascade", d=D, levels=lv,
      cascade=dict(alphas=[alpha] * (levels - 1), level_start_steps=[start] * (levels - 1),
                   stop_gradient=stop_gradient, empty_live=empty_live, k_anneal_frac=0.0)))


def rand_params(seed=0):
  rng = np.random.default_rng(seed)

  def level(n, d):
    w = rng.normal(size=(n, d))
    return {"W_enc": rng.normal(size=(d, n)), "b_enc": 0.3 * rng.normal(size=n),
            "W_dec": w / np.linalg.norm(w, axis=1, keepdims=True), "b_dec": 0.3 * rng.normal(size=d)}

  return (level(N1, D), level(N2, D))


def to32(p):
  return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), p)


def flatp(p):
  return {f"{i}/{k}": v for i, lv in enumerate(p) for k, v in lv.items()}


def unflat(f):
  out = ({}, {})
  for k, v in f.items():
    i, name = k.split("/")
    out[int(i)][name] = v
  return out


@pytest.fixture(scope="module")
def x():
  return np.random.default_rng(1).normal(size=(B, D))


def reference(p0, x, alpha, mode="full", empty="skip"):
  """float64 cascade loss with the top-k masks, live mask and stop-gradient targets frozen at p0."""
  z1 = R.relu(R.preact(p0[0], x))
  m1 = R.batch_topk_mask(z1, B * K1)
  live = np.any(z1 * m1 > 0, axis=0)
  if not live.any() and empty == "all":
    live = np.ones_like(live)
  atoms0 = p0[0]["W_dec"]
  z2 = R.relu(R.preact(p0[1], atoms0))
  m2 = R.batch_topk_mask(z2, int(live.sum()) * K2, valid=live[:, None])

  def loss(pf):
    p = unflat(pf)
    f1 = R.relu(R.preact(p[0], x)) * m1
    l1 = R.recon(x, f1 @ p[0]["W_dec"] + p[0]["b_dec"])
    if not live.any():
      return l1
    w = p[0]["W_dec"]
    w_in = atoms0 if mode == "bilateral" else w
    target = w if mode == "full" else atoms0
    h = R.relu(R.preact(p[1], w_in)) * m2
    err = np.sum((target - (h @ p[1]["W_dec"] + p[1]["b_dec"])) ** 2, axis=1)
    return l1 + alpha * err[live].sum() / live.sum()

  return loss, live


def jax_total(model, p, x, step=10):
  st = cascade.init_state(model.cfg)
  return model.loss(p, st, jnp.asarray(x, jnp.float32), step=step)


@pytest.mark.parametrize("mode", ["full", "partial", "bilateral"])
def test_loss_and_gradients_match_reference(x, mode):
  model = build(stop_gradient=mode)
  p0 = rand_params()
  ref, live = reference(p0, x, 0.7, mode)
  assert 0 < live.sum() < N1, "the test needs both live and masked atoms"
  (loss, out), g = jax.value_and_grad(lambda p: jax_total(model, p, x), has_aux=True)(to32(p0))
  want = ref(flatp(p0))
  assert abs(float(loss) - want) <= TOL * want
  g_ref = R.fd_grad(ref, flatp(p0))
  g = {k: np.asarray(v, np.float64) for k, v in flatp(g).items()}
  num = np.sqrt(sum(np.sum((g[k] - g_ref[k]) ** 2) for k in g_ref))
  den = np.sqrt(sum(np.sum(g_ref[k] ** 2) for k in g_ref))
  assert num <= TOL * den
  assert float(out.metrics["l2/live_atoms"]) == live.sum()


def level2_term(model, x):
  """The alpha L2 part of the objective, as a function of all parameters (live mask from x)."""
  def fn(p):
    cfg = model.cfg
    codes = batchtopk.loss(p[0], batchtopk.init_state(cfg.levels[0].cfg),
                           jnp.asarray(x, jnp.float32), cfg.levels[0].cfg, step=10)[1].codes
    live = codes_lib.active(codes, None, cfg.live_eps)
    return cascade.upper_levels(p, cascade.init_state(cfg), live, cfg, step=10)[0]
  return fn


def test_masked_atoms_contribute_nothing(x):
  model = build()
  p0 = rand_params()
  _, live = reference(p0, x, 0.7)
  g = jax.grad(level2_term(model, x))(to32(p0))
  gw = np.asarray(g[0]["W_dec"])
  assert np.all(gw[~live] == 0.0)          # masked atoms get nothing from L2
  assert np.all(np.abs(gw[live]).sum(1) > 0)
  # Moving a masked atom leaves L2 unchanged.
  p1 = jax.tree_util.tree_map(np.copy, p0)
  j = int(np.flatnonzero(~live)[0])
  p1[0]["W_dec"][j] = -p1[0]["W_dec"][j]
  a = float(level2_term(model, x)(to32(p0)))
  b = float(level2_term(model, x)(to32(p1)))
  assert abs(a - b) <= 1e-6 * abs(a)


def test_bilateral_blocks_and_partial_keeps_only_the_input_path(x):
  p0 = to32(rand_params())
  g_bi = jax.grad(level2_term(build(stop_gradient="bilateral"), x))(p0)
  for leaf in jax.tree_util.tree_leaves(g_bi[0]):
    assert float(jnp.abs(leaf).max()) == 0.0   # Level 2 cannot move Level 1
  assert float(jnp.abs(g_bi[1]["W_dec"]).max()) > 0
  g_full = jax.grad(level2_term(build(stop_gradient="full"), x))(p0)
  g_part = jax.grad(level2_term(build(stop_gradient="partial"), x))(p0)
  # partial = full minus the target path: the target path alone is d/dw of -2 err . w ...
  assert float(jnp.abs(g_part[0]["W_dec"]).max()) > 0
  assert not np.allclose(np.asarray(g_part[0]["W_dec"]), np.asarray(g_full[0]["W_dec"]))
  # ... and level 1's encoder/biases get nothing from L2 in any mode.
  for g in (g_full, g_part):
    for name in ("W_enc", "b_enc", "b_dec"):
      assert float(jnp.abs(g[0][name]).max()) == 0.0


@pytest.mark.parametrize("empty", ["skip", "all"])
def test_no_live_atom(empty):
  model = build(empty_live=empty)
  p0 = rand_params()
  p0[0]["b_enc"][:] = -10.0
  x = np.tile(p0[0]["b_dec"], (B, 1))     # every pre-activation is about -10: no atom is live
  ref, live = reference(p0, x, 0.7, empty=empty)
  loss, out = jax_total(model, to32(p0), x)
  assert float(out.metrics["l2/live_atoms"]) == 0
  np.testing.assert_allclose(float(loss), ref(flatp(p0)), rtol=TOL)
  l1 = float(out.metrics["l1/loss"])
  if empty == "skip":
    assert float(loss) == l1
  else:
    assert float(loss) > l1 and live.all()


def test_level_start_step_and_bias_reinit(x):
  model = build(start=100)
  p = to32(rand_params())
  st = cascade.init_state(model.cfg)
  loss, out = model.loss(p, st, jnp.asarray(x, jnp.float32), step=99)
  assert float(loss) == float(out.metrics["l1/loss"])
  assert float(out.state[1]["threshold"]) == float(st[1]["threshold"])
  loss, _ = model.loss(p, st, jnp.asarray(x, jnp.float32), step=100)
  assert float(loss) > float(out.metrics["l1/loss"])
  same = model.pre_step(p, jnp.int32(99))
  np.testing.assert_array_equal(np.asarray(same[1]["b_dec"]), np.asarray(p[1]["b_dec"]))
  new = model.pre_step(p, jnp.int32(100))
  atoms = np.asarray(p[0]["W_dec"], np.float64)
  gm = np.asarray(new[1]["b_dec"], np.float64)
  # The geometric median is a stationary point of the sum of distances.
  grad = -np.sum((atoms - gm) / np.linalg.norm(atoms - gm, axis=1, keepdims=True), 0)
  assert np.linalg.norm(grad) < 1e-3 * len(atoms)
  assert not np.allclose(gm, np.asarray(p[1]["b_dec"]))


def test_parent_map_is_argmax_of_dense_activation():
  model = build()
  p0 = rand_params(3)
  (pm,) = model.parent_maps(to32(p0))
  act = R.relu(R.preact(p0[1], p0[0]["W_dec"]))
  want = np.where(act.max(1) > 1e-3, act.argmax(1), -1)
  np.testing.assert_array_equal(np.asarray(pm), want)


def test_three_level_cascade_trains():
  pl = planted.make_planted(planted.PlantedConfig(d=16, n_parents=4, children_per_parent=3,
                                                  n_images=40, tokens_per_image=16))
  X = pl.tokens / np.sqrt((pl.tokens ** 2).sum(1).mean())
  model = models.build_model(dict(
      name="cascade", d=16,
      levels=[dict(family="batchtopk", n=24, k=3, aux_k=None),
              dict(family="topk", n=6, k=1, aux_k=None),
              dict(family="relu", n=3, l1_coef=0.01)],
      cascade=dict(level_start_steps=[20, 40], k_anneal_frac=0.0)), total_steps=150)
  rng = np.random.default_rng(0)
  batches = (jnp.asarray(X[rng.integers(0, len(X), 64)]) for _ in range(10 ** 6))
  hist = []
  ts, m = step_lib.fit(model, batches, 150, key=jax.random.PRNGKey(0), warmup_steps=10,
                       log_every=10, log_fn=lambda i, mm: hist.append(mm))
  assert all(np.isfinite(v) for v in m.values())
  assert hist[-1]["l1/fvu"] < 0.5 * hist[0]["l1/fvu"]
  assert m["l3/active"] == 1.0 and 0 < m["l3/live_atoms"] <= 6
  pm2, pm3 = model.parent_maps(ts.params)
  assert pm2.shape == (24,) and pm3.shape == (6,)
  assert int(pm2.max()) < 6 and int(pm3.max()) < 3


def test_config_errors():
  with pytest.raises(ValueError, match="at least 2 levels"):
    models.build_model(dict(name="cascade", d=8, levels=[dict(family="relu", n=4)]))
  with pytest.raises(ValueError, match="'nope'"):
    build(stop_gradient="nope")
  with pytest.raises(ValueError, match="unknown SAE family 'batchtopp'"):
    models.build_model(dict(name="cascade", d=8, levels=[dict(family="batchtopp", n=4),
                                                          dict(family="relu", n=2)]))
  with pytest.raises(ValueError, match="level 2: k=9 is larger than the dictionary size n=5"):
    models.build_model(dict(name="cascade", d=8, levels=[dict(family="relu", n=4),
                                                          dict(family="topk", n=5, k=9)]))
  with pytest.raises(ValueError, match="alphas needs one value per level"):
    models.build_model(dict(name="cascade", d=8, levels=[dict(family="relu", n=4),
                                                          dict(family="relu", n=2)],
                            cascade=dict(alphas=[1.0, 2.0])))


def test_decode_is_level_one_linear_decode():
  """A cascade decodes Level-1 codes with Level 1's decoder: codes @ W_dec1 + b_dec1."""
  model = build()
  p0 = rand_params(4)
  codes = np.abs(np.random.default_rng(5).normal(size=(6, N1)))
  got = np.asarray(model.decode(to32(p0), jnp.asarray(codes, jnp.float32)), np.float64)
  np.testing.assert_allclose(got, codes @ p0[0]["W_dec"] + p0[0]["b_dec"], rtol=1e-5, atol=1e-5)


def test_model_size_and_orphan_atoms():
  """A cascade's n is Level 1's (it sets the default lr); an atom no Level-2 unit reads above
  parent_min has parent -1."""
  model = build()
  assert model.n == N1
  p0 = rand_params(6)
  p0[1]["b_enc"] = p0[1]["b_enc"] - 100.0 * (np.arange(N2) >= 0)   # Level 2 reads nothing
  (pm,) = model.parent_maps(to32(p0))
  np.testing.assert_array_equal(np.asarray(pm), np.full(N1, -1))


def test_reseed_until_frac_follows_the_run_length():
  lv = [dict(family="relu", n=4), dict(family="relu", n=2)]
  for steps, want in ((1000, 900), (4000, 3600)):
    m = models.build_model(dict(name="cascade", d=8, levels=lv, cascade=dict(
        reseed_every=50, reseed_until_frac=0.9)), total_steps=steps)
    assert m.cfg.reseed_until == want
  m = models.build_model(dict(name="cascade", d=8, levels=lv, cascade=dict(
      reseed_every=50, reseed_until_frac=0.9, reseed_until=7)), total_steps=1000)
  assert m.cfg.reseed_until == 7
  with pytest.raises(ValueError, match="reseed_until_frac must be in"):
    models.build_model(dict(name="cascade", d=8, levels=lv,
                            cascade=dict(reseed_until_frac=1.5)), total_steps=10)
  with pytest.raises(ValueError, match="needs the run's total_steps"):
    models.build_model(dict(name="cascade", d=8, levels=lv, cascade=dict(reseed_until_frac=0.5)))
