"""The vq family (csae_jax/families/vq.py) and its Euclidean re-seeding, against float64 NumPy."""
import jax
import jax.numpy as jnp
import numpy as np

from csae_jax import compaction, level_kmeans as km, models
from csae_jax import conventions as cv
from csae_jax import step as step_lib
from csae_jax.families import make_config, vq

D, N = 4, 3


def np_d2(x, c):
  return ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)


def hand_case():
  """Three centres around an origin b; rows 0-1 nearest centre 0, rows 2-3 centre 2, row 4
  centre 1, row 5 (masked out) centre 2."""
  b = np.array([0.5, -0.25, 0.0, 1.0])
  w = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, -1.5, 0.5]])
  x = b + np.array([[1.2, 0.1, 0.0, 0.0], [0.7, -0.2, 0.1, 0.0], [0.0, 0.1, -1.0, 0.4],
                    [0.2, 0.0, -2.0, 0.9], [0.1, 1.6, 0.3, 0.0], [0.0, 0.0, -1.4, 0.0]])
  mask = np.array([1, 1, 1, 1, 1, 0], bool)
  return b, w, x, mask


def test_codes_loss_and_gradients_match_numpy():
  b, w, x, mask = hand_case()
  cfg = make_config("vq", d=D, n=N)
  p = {"W_dec": jnp.asarray(w, jnp.float32), "b_dec": jnp.asarray(b, jnp.float32)}
  state = vq.init_state(cfg)
  d2 = np_d2(x, b + w)
  r = d2.argmin(1)
  assert list(r) == [0, 0, 2, 2, 1, 2]       # the hand-built assignment
  np.testing.assert_array_equal(np.asarray(vq.encode(p, state, jnp.asarray(x, jnp.float32), cfg)),
                                np.eye(N)[r])
  # dense activation: half the squared-distance margin to the runner-up, on the winner only
  srt = np.sort(d2, 1)
  want_dense = np.eye(N)[r] * (srt[:, 1:2] - srt[:, :1]) / 2
  np.testing.assert_allclose(np.asarray(vq.dense_activation(p, jnp.asarray(x, jnp.float32))),
                             want_dense, atol=1e-5)

  def fn(p, xx):
    return vq.loss(p, state, xx, cfg, step=0, row_mask=jnp.asarray(mask))

  (loss, out), (gp, gx) = jax.value_and_grad(fn, argnums=(0, 1), has_aux=True)(
      p, jnp.asarray(x, jnp.float32))
  resid = x - (b + w)[r]                      # x_j - c_{r_j}
  m = mask.astype(float)
  nm = m.sum()
  np.testing.assert_allclose(float(loss), (m * (resid ** 2).sum(1)).sum() / nm, rtol=1e-6)
  want_gw = np.zeros_like(w)
  for j in range(len(x)):
    want_gw[r[j]] -= 2 * m[j] * resid[j] / nm
  np.testing.assert_allclose(np.asarray(gp["W_dec"]), want_gw, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(gp["b_dec"]), 0.0)   # the origin is not trained
  np.testing.assert_allclose(np.asarray(gx), 2 * m[:, None] * resid / nm, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(out.active), [True, True, True])
  fired = np.asarray(out.state["tokens_since_fired"])
  np.testing.assert_array_equal(fired, 0)
  # a unit owning only masked rows did not fire: its counter grows by the masked row count
  (_, out2) = vq.loss(p, dict(state, tokens_since_fired=jnp.array([0, 7, 0], jnp.int32)),
                      jnp.asarray(x[[0, 5]], jnp.float32), cfg, row_mask=jnp.asarray([True, False]))
  np.testing.assert_array_equal(np.asarray(out2.state["tokens_since_fired"]), [0, 8, 1])


def np_lloyd_euclid(x, c, iters, w):
  c = np.array(c, np.float64)
  for _ in range(iters):
    assign = np_d2(x, c).argmin(1)
    new = c.copy()
    for r in range(len(c)):
      own = (assign == r) & (w > 0)
      if own.any():
        new[r] = (w[own, None] * x[own]).sum(0) / w[own].sum()
    c = new
  return c


def bundles(rng, sizes, d, spread=0.1):
  centres = 2.0 * np.eye(d)[:len(sizes)]
  x = np.concatenate([centres[i] + spread * rng.normal(size=(m, d)) for i, m in enumerate(sizes)])
  return x, np.repeat(np.arange(len(sizes)), sizes)


def test_euclidean_lloyd_and_reseed_match_numpy_from_the_same_starts():
  rng = np.random.default_rng(0)
  x, labels = bundles(rng, (5, 4, 6), 6)
  dead = 3.0 * rng.normal(size=(4, 6))        # far-off atoms of weight 0 must not move a centre
  atoms = np.concatenate([x, dead])
  live = np.r_[np.ones(len(x)), np.zeros(4)]
  x32, w32 = jnp.asarray(atoms, jnp.float32), jnp.asarray(live, jnp.float32)
  c0 = atoms[[0, 1, 16]]                      # two starts in bundle 0, one on a dead atom
  b = np.array([0.3, 0.0, -0.2, 0.1, 0.0, 0.0])
  params = {"W_dec": jnp.zeros((3, 6)), "b_dec": jnp.asarray(b, jnp.float32)}
  key, restarts, iters = jax.random.PRNGKey(3), 4, 6

  @jax.jit
  def run(c0, params):
    starts = jax.vmap(lambda k: km.plus_plus_init(k, x32 - params["b_dec"], 3, w32,
                                                  km.EUCLIDEAN))(jax.random.split(key, restarts))
    return (km.lloyd(x32, c0, 4, w32, km.EUCLIDEAN), starts,
            vq.reseed(key, params, x32, restarts, iters, w32))

  got, starts, out = run(jnp.asarray(c0, jnp.float32), params)
  np.testing.assert_allclose(np.asarray(got), np_lloyd_euclid(atoms, c0, 4, live), atol=1e-5)
  # vq.reseed = best (lowest weighted SSE) of NumPy Lloyd from each restart's k-means++ start
  best, best_sse = None, np.inf
  for start in np.asarray(starts, np.float64):
    # k-means++ places Euclidean centres on live atoms themselves
    assert all(np.min(np.abs(atoms[live > 0] - b - s).sum(1)) < 1e-5 for s in start)
    c = np_lloyd_euclid(atoms - b, start, iters, live)
    sse = (live * np_d2(atoms - b, c).min(1)).sum()
    if sse < best_sse:
      best, best_sse = c, sse
  np.testing.assert_allclose(np.asarray(out["W_dec"]), best, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(out["b_dec"]), np.asarray(params["b_dec"]))
  assign = np_d2(x - b, best).argmin(1)       # well-separated bundles: one centre each
  assert all(len(set(assign[labels == i])) == 1 for i in range(3)) and len(set(assign)) == 3


def vq_cascade(**casc):
  return models.build_model(dict(
      name="cascade", d=6, levels=[dict(family="batchtopk", n=19, k=1, aux_k=None),
                                   dict(family="vq", n=3)],
      cascade=dict(dict(alphas=[0.1], coupling="ratio"), **casc)))


def test_parents_are_the_nearest_centres_and_pre_step_reseeds_on_live_atoms():
  rng = np.random.default_rng(1)
  x, labels = bundles(rng, (6, 5, 4), 6, spread=0.2)
  dead = 3.0 * rng.normal(size=(4, 6))
  atoms = np.concatenate([x, dead]).astype(np.float32)
  model = vq_cascade(level_start_steps=[5], reseed_every=5, reseed_until=5, reseed_restarts=4,
                     reseed_iters=8, reseed_live_tokens=100)
  p, st = model.init(jax.random.PRNGKey(0), jnp.zeros((8, 6), jnp.float32))
  p = (dict(p[0], W_dec=jnp.asarray(atoms)), dict(p[1]))
  # parents of hand-set centres: argmin of the Euclidean distance (NumPy)
  w = rng.normal(size=(3, 6))
  lv2 = dict(p[1], W_dec=jnp.asarray(w, jnp.float32))
  pm = np.asarray(model.parent_maps((p[0], lv2))[0])
  np.testing.assert_array_equal(pm, np_d2(atoms, np.asarray(lv2["b_dec"]) + w).argmin(1))
  # the model's Level-1 state says atoms 15-18 have not fired for 200 tokens: dead
  st = (dict(st[0], tokens_since_fired=jnp.asarray([0] * 15 + [200] * 4, jnp.int32)), st[1])
  pre_step = jax.jit(model.pre_step)
  same = pre_step(p, jnp.int32(4), st)
  np.testing.assert_array_equal(np.asarray(same[1]["W_dec"]), np.asarray(p[1]["W_dec"]))
  new = pre_step(p, jnp.int32(5), st)
  b = np.asarray(new[1]["b_dec"], np.float64)
  np.testing.assert_allclose(b, np.asarray(cv.geometric_median(jnp.asarray(atoms))),
                             atol=1e-5)      # the start step's bias re-init (SPEC 3) ran first
  c = np.asarray(new[1]["W_dec"], np.float64)
  for r in range(3):                         # each centre is the mean of one live bundle
    own = np_d2(x - b, c).argmin(1) == r
    assert len(set(labels[own])) == 1
    np.testing.assert_allclose(c[r], (x[own] - b).mean(0), atol=1e-5)
  pm = np.asarray(model.parent_maps(new)[0])[:15]
  assert all(len(set(pm[labels == i])) == 1 for i in range(3)) and len(set(pm)) == 3


def test_compacted_vq_level_equals_masked():
  rng = np.random.default_rng(2)
  cfg = make_config("vq", d=D, n=N)
  p = {"W_dec": jnp.asarray(rng.normal(size=(N, D)), jnp.float32),
       "b_dec": jnp.asarray(0.1 * rng.normal(size=D), jnp.float32)}
  atoms = jnp.asarray(rng.normal(size=(40, D)), jnp.float32)
  mask = jnp.asarray(rng.random(40) < 0.3)
  state = vq.init_state(cfg)

  def run(caps):
    def fn(p, a):
      loss, metrics, _, live = compaction.run_level(vq, p, state, a, a, mask, cfg, step=0,
                                                    caps=caps, eps=0.0)
      return loss, (metrics, live)
    return jax.value_and_grad(fn, argnums=(0, 1), has_aux=True)(p, atoms)

  (la, (ma, lva)), ga = run((16,))
  (lb, (mb, lvb)), gb = run(())
  np.testing.assert_allclose(la, lb, rtol=1e-6)
  for u, v in zip(jax.tree_util.tree_leaves((ga, ma)), jax.tree_util.tree_leaves((gb, mb))):
    np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(lva, lvb)


def test_cascade_step_with_a_vq_level_2_trains_and_pulls_level_1():
  rng = np.random.default_rng(3)
  x, _ = bundles(rng, (40, 40, 40), 6, spread=0.3)
  model = vq_cascade()
  opt, sched = step_lib.make_optimizer(model, 40, lr=1e-2, warmup_steps=1)
  xs = jnp.asarray(x[rng.permutation(len(x))[:32]], jnp.float32)
  ts = step_lib.init_train_state(model, opt, jax.random.PRNGKey(0), xs)
  step = step_lib.make_jitted_step(model, opt, sched)
  l2 = []
  for _ in range(30):
    ts, m = step(ts, xs)
    l2.append(float(m["l2/recon"]))
  assert np.isfinite(l2).all() and l2[-1] < l2[0]
  assert float(m["l2/coupling_raw_ratio"]) > 0      # Level 2's loss reaches the Level-1 decoder
  np.testing.assert_allclose(np.linalg.norm(np.asarray(ts.params[0]["W_dec"]), axis=1), 1.0,
                             atol=1e-5)              # Level 1 unit norm; vq centres are free
