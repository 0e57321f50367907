"""K-means re-seeding of cascade levels (csae_jax/level_kmeans.py, cascade.Config.reseed_*)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from csae_jax import cascade
from csae_jax import level_kmeans as km
from csae_jax import models


def np_unit(a):
  return a / (np.linalg.norm(a, axis=-1, keepdims=True) + 1e-12)


def np_lloyd(x, c, iters, w=None):
  """The rule of level_kmeans.lloyd in float64 NumPy, one atom at a time."""
  c = np.array(c, np.float64)
  w = np.ones(len(x)) if w is None else w
  for _ in range(iters):
    assign = [int(np.argmax(c @ xj)) for xj in x]
    new = c.copy()
    for r in range(len(c)):
      owned = [w[j] * x[j] for j in range(len(x)) if assign[j] == r and w[j] > 0]
      if owned:
        new[r] = np_unit(np.sum(owned, 0))
    c = new
  return c


def test_lloyd_matches_numpy_reference():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(40, 6))
  c0 = np_unit(rng.normal(size=(5, 6)))
  c0[4] = -np_unit(x.sum(0))   # unlikely to own an atom: an empty unit keeps its row
  for iters in (1, 3, 10):
    got = np.asarray(km.lloyd(jnp.asarray(x, jnp.float32), jnp.asarray(c0, jnp.float32), iters))
    np.testing.assert_allclose(got, np_lloyd(x, c0, iters), atol=2e-5)


def test_weighted_lloyd_matches_numpy_reference():
  rng = np.random.default_rng(6)
  x = rng.normal(size=(30, 5))
  c0 = np_unit(rng.normal(size=(4, 5)))
  w = (rng.uniform(size=30) < 0.6).astype(np.float64)
  got = km.lloyd(jnp.asarray(x, jnp.float32), jnp.asarray(c0, jnp.float32), 5,
                 jnp.asarray(w, jnp.float32))
  np.testing.assert_allclose(np.asarray(got), np_lloyd(x, c0, 5, w), atol=2e-5)


def bundles(rng, n_per=(5, 3, 4), d=8, spread=0.05):
  dirs = np.eye(d)[:len(n_per)]
  x = np.concatenate([dirs[i] + spread * rng.normal(size=(m, d)) for i, m in enumerate(n_per)])
  labels = np.repeat(np.arange(len(n_per)), n_per)
  return x, labels, dirs


def test_plus_plus_init_takes_one_atom_per_well_separated_bundle():
  rng = np.random.default_rng(1)
  x, labels, _ = bundles(rng)
  for seed in range(5):
    c = np.asarray(km.plus_plus_init(jax.random.PRNGKey(seed), jnp.asarray(x, jnp.float32), 3))
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-5)
    # each centre is one (normalised) atom, and the three come from three different bundles
    cos = c @ np_unit(x).T
    picked = cos.argmax(1)
    np.testing.assert_allclose(cos.max(1), 1.0, atol=1e-5)
    assert sorted(labels[picked]) == [0, 1, 2]


def test_greedy_plus_plus_prefers_the_candidate_that_lowers_the_cost_most():
  # Two bundles of 20 atoms (e1, e2) and one outlier at 3 e3. After a first centre in bundle e1,
  # D^2 sampling gives the outlier ~1/5 of the mass; taking it lowers the total cost by ~10, a
  # bundle-e2 atom by ~40. Greedy (8 trials) never takes the outlier; plain k-means++ sometimes.
  rng = np.random.default_rng(3)
  d = 6
  x = np.concatenate([np.eye(d)[0] + 0.02 * rng.normal(size=(20, d)),
                      np.eye(d)[1] + 0.02 * rng.normal(size=(20, d)), 3.0 * np.eye(d)[2:3]])
  xj = jnp.asarray(x, jnp.float32)

  def second_on_outlier(seed, trials):
    c = np.asarray(km.plus_plus_init(jax.random.PRNGKey(seed), xj, 2, None, km.EUCLIDEAN,
                                     trials))
    first = int(np.argmin(((x - c[0]) ** 2).sum(1)))
    second = int(np.argmin(((x - c[1]) ** 2).sum(1)))
    return first < 20, second == 40

  seeds = [s for s in range(40) if second_on_outlier(s, 8)[0]]
  assert len(seeds) >= 10
  assert not any(second_on_outlier(s, 8)[1] for s in seeds)
  assert any(second_on_outlier(s, 1)[1] for s in range(40) if second_on_outlier(s, 1)[0])
  assert km.default_trials(24) == 2 + int(np.log(24))
  with pytest.raises(ValueError, match="trials"):
    km.plus_plus_init(jax.random.PRNGKey(0), xj, 2, trials=0)


def test_fit_recovers_bundles_and_reports_its_score():
  rng = np.random.default_rng(2)
  x, labels, _ = bundles(rng)
  c, score = km.fit(jax.random.PRNGKey(0), jnp.asarray(x, jnp.float32), 3, restarts=4, iters=10)
  c = np.asarray(c, np.float64)
  assign = (x @ c.T).argmax(1)
  # the partition is the bundles, each centre normalise(sum of its bundle's atoms)
  for r in range(3):
    mine = labels[assign == r]
    assert len(set(mine)) == 1
    np.testing.assert_allclose(c[r], np_unit(x[assign == r].sum(0)), atol=2e-5)
  want = np.sum(np.maximum((x @ c.T).max(1), 0) ** 2)
  np.testing.assert_allclose(float(score), want, rtol=1e-5)


def build(every, until=1000, start=10):
  lv = [dict(family="batchtopk", n=12, k=1, aux_k=None), dict(family="batchtopk", n=3, k=1,
                                                               aux_k=None)]
  return models.build_model(dict(name="cascade", d=8, levels=lv, cascade=dict(
      alphas=[0.1], level_start_steps=[start], reseed_every=every, reseed_until=until,
      reseed_restarts=4, reseed_iters=10)))


def params(model, atoms):
  p = model.init(jax.random.PRNGKey(0), jnp.zeros((4, 8), jnp.float32))[0]
  p = [dict(q) for q in p]
  p[0]["W_dec"] = jnp.asarray(atoms, jnp.float32)
  p[1]["b_enc"] = p[1]["b_enc"] + 0.3
  return tuple(p)


def test_reseed_writes_kmeans_centres_into_level_2():
  rng = np.random.default_rng(3)
  x, labels, _ = bundles(rng, (4, 4, 4))
  atoms = np_unit(x)
  model = build(every=5)
  p = params(model, atoms)
  new = model.pre_step(p, jnp.int32(10))      # the start step: b_dec reset, then re-seeded
  b = np.asarray(new[1]["b_dec"], np.float64)
  dec = np.asarray(new[1]["W_dec"], np.float64)
  assign = ((atoms - b) @ dec.T).argmax(1)
  for r in range(3):
    assert len(set(labels[assign == r])) == 1
    np.testing.assert_allclose(dec[r], np_unit((atoms[assign == r] - b).sum(0)), atol=2e-5)
  np.testing.assert_allclose(np.asarray(new[1]["W_enc"]), dec.T, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(new[1]["b_enc"]), 0.0)
  np.testing.assert_array_equal(np.asarray(new[0]["W_dec"]), np.asarray(p[0]["W_dec"]))
  # the parents are then the bundles
  pm = np.asarray(model.parent_maps(new)[0])
  assert all(len(set(pm[labels == i])) == 1 for i in range(3))
  assert len(set(pm)) == 3


def test_live_mask_keeps_units_off_dead_atoms():
  rng = np.random.default_rng(7)
  x, labels, _ = bundles(rng, (4, 4, 4), d=16)
  dead = np_unit(rng.normal(size=(6, 16)))       # isolated random directions, like dead atoms
  atoms = np.concatenate([np_unit(x), dead]).astype(np.float32)
  live = np.r_[np.ones(12), np.zeros(6)].astype(np.float32)
  model = build(every=5)
  p = params(model, np.zeros((12, 8)))
  lv2 = dict(p[1])
  lv2["b_dec"] = jnp.zeros(16)
  lv2["W_enc"], lv2["W_dec"] = jnp.zeros((16, 3)), jnp.zeros((3, 16))
  for seed in range(4):
    out = km.reseed(jax.random.PRNGKey(seed), lv2, jnp.asarray(atoms), 4, 10, jnp.asarray(live))
    dec = np.asarray(out["W_dec"], np.float64)
    assign = (atoms[:12] @ dec.T).argmax(1)
    assert sorted(set(assign)) == [0, 1, 2]
    for r in range(3):   # each centre is its bundle's normalised sum; the dead atoms add nothing
      np.testing.assert_allclose(dec[r], np_unit(atoms[:12][assign == r].sum(0)), atol=2e-5)


def test_reseed_schedule_and_off_by_default():
  cfg = build(every=5, until=20).cfg
  steps = [s for s in range(40) if bool(cascade.is_reseed_step(cfg, 1, s))]
  assert steps == [10, 15, 20]
  rng = np.random.default_rng(4)
  atoms = np_unit(bundles(rng, (4, 4, 4))[0])
  for model, step in ((build(every=5), 12), (build(every=0), 10), (build(every=5, until=9), 10)):
    p = params(model, atoms)
    out = model.pre_step(p, jnp.int32(step))
    for name in ("W_dec", "W_enc", "b_enc"):
      np.testing.assert_array_equal(np.asarray(out[1][name]), np.asarray(p[1][name]))


def test_reseed_runs_inside_jit():
  rng = np.random.default_rng(5)
  atoms = np_unit(bundles(rng, (4, 4, 4))[0])
  model = build(every=5)
  p = params(model, atoms)
  jitted = jax.jit(model.pre_step)(p, jnp.int32(15))
  eager = model.pre_step(p, jnp.int32(15))
  np.testing.assert_allclose(np.asarray(jitted[1]["W_dec"]), np.asarray(eager[1]["W_dec"]),
                             atol=1e-6)


@pytest.mark.parametrize("field,value", [("reseed_every", -1), ("reseed_until", 1.5),
                                         ("reseed_restarts", 0), ("reseed_iters", True)])
def test_bad_reseed_settings_rejected(field, value):
  cfg = build(every=5).cfg
  with pytest.raises(ValueError, match=field):
    cfg.replace(**{field: value}).validate()
