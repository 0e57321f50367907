"""Every flat family's loss and gradients against NumPy float64 references (SPEC section 2)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from csae_jax import families
from csae_jax.families import base, gated, jumprelu, pannealing
from tests.families import npref as R

B, D, N, K = 16, 8, 12, 3
TOL = 1e-5


def flat(p, prefix=""):
  out = {}
  for k, v in p.items():
    if isinstance(v, dict):
      out.update(flat(v, prefix + k + "/"))
    else:
      out[prefix + k] = np.asarray(v, np.float64)
  return out


def nest(f):
  out = {}
  for k, v in f.items():
    parts = k.split("/")
    cur = out
    for part in parts[:-1]:
      cur = cur.setdefault(part, {})
    cur[parts[-1]] = v
  return out


def random_params(name, cfg, seed=0):
  """The family's own init, then every leaf replaced by generic random values of its shape."""
  fam = families.get_family(name)
  p = fam.init(jax.random.PRNGKey(seed), cfg, jnp.zeros((4, cfg.d)))
  rng = np.random.default_rng(seed)
  out = {}
  for k, v in flat(p).items():
    scale = 0.3 if k.endswith(("b_enc", "b_dec", "b_gate", "b_mag", "r_mag")) else 1.0
    out[k] = scale * rng.normal(size=v.shape)
    if k.endswith("W_dec"):
      out[k] /= np.linalg.norm(out[k], axis=1, keepdims=True)
    if k.endswith("log_threshold"):
      out[k] = np.log(rng.uniform(0.05, 0.6, size=v.shape))
  return out


def jax_loss_grad(name, p64, state, x, cfg, step):
  fam = families.get_family(name)
  p32 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), nest(p64))
  fn = lambda p: fam.loss(p, state, jnp.asarray(x, jnp.float32), cfg, step=step)
  (loss, out), g = jax.value_and_grad(fn, has_aux=True)(p32)
  return float(loss), flat(g), out


def assert_match(name, cfg, ref_loss, p64, x, state=None, step=500):
  """ref_loss(params64) is the float64 loss with stop-gradient parts frozen at p64."""
  fam = families.get_family(name)
  state = fam.init_state(cfg) if state is None else state
  loss, g, out = jax_loss_grad(name, p64, state, x, cfg, step)
  want = ref_loss(p64)
  assert abs(loss - want) <= TOL * abs(want), (loss, want)
  g_ref = R.fd_grad(ref_loss, p64)
  num = np.sqrt(sum(np.sum((g[k] - g_ref[k]) ** 2) for k in g_ref))
  den = np.sqrt(sum(np.sum(g_ref[k] ** 2) for k in g_ref))
  assert num <= TOL * den, {k: float(np.abs(g[k] - g_ref[k]).max()) for k in g_ref}
  assert set(g) == set(g_ref)
  return out


@pytest.fixture(scope="module")
def x():
  return np.random.default_rng(1).normal(size=(B, D))


@pytest.mark.parametrize("april", [False, True])
def test_relu(x, april):
  cfg = families.make_config("relu", d=D, n=N, l1_coef=0.3, sparsity_warmup=1000, april2024=april)
  p0 = random_params("relu", cfg)
  lam = 0.3 * 500 / 1000   # linear warm-up of lambda, step 500 of 1000

  def ref(p):
    f = R.relu(R.preact(p, x))
    xhat = f @ p["W_dec"] + p["b_dec"]
    norms = np.linalg.norm(p["W_dec"], axis=1) if april else 1.0
    return R.recon(x, xhat) + lam * np.mean(np.sum(f * norms, -1))

  assert_match("relu", cfg, ref, p0, x)
  assert cfg.constrained_decoder() == (not april)


def test_topk_with_auxk(x):
  cfg = families.make_config("topk", d=D, n=N, k=K, aux_k=512, dead_tokens=100)
  p0 = random_params("topk", cfg)
  dead = np.zeros(N, bool)
  dead[[0, 3, 4, 7, 9]] = True
  state = {"tokens_since_fired": jnp.where(jnp.asarray(dead), 200, 0).astype(jnp.int32)}
  z0 = R.relu(R.preact(p0, x))
  mask = R.row_topk_mask(z0, K)
  e0 = x - ((z0 * mask) @ p0["W_dec"] + p0["b_dec"])   # detached residual
  k_aux = min(512, D // 2, dead.sum())
  zd0 = np.where(dead[None], z0, 0.0)
  aux_mask = R.row_topk_mask(zd0, k_aux)

  def ref(p):
    z = R.relu(R.preact(p, x))
    f = z * mask
    xhat = f @ p["W_dec"] + p["b_dec"]
    f_aux = np.where(dead[None], z, 0.0) * aux_mask
    e_aux = f_aux @ p["W_dec"]
    l_aux = np.sum((e0 - e_aux) ** 2) / np.sum((e0 - e0.mean(0)) ** 2)
    return R.recon(x, xhat) + l_aux / 32

  out = assert_match("topk", cfg, ref, p0, x, state=state)
  assert np.isclose(float(out.metrics["aux_loss"]), R.auxk(p0, z0, e0, dead, 512, D), rtol=1e-5)
  assert np.all(np.sum(np.asarray(out.codes) > 0, axis=1) <= K)


def test_auxk_is_zero_without_dead_latents(x):
  cfg = families.make_config("topk", d=D, n=N, k=K, aux_k=512, dead_tokens=100)
  p0 = random_params("topk", cfg)
  _, _, out = jax_loss_grad("topk", p0, families.topk.init_state(cfg), x, cfg, 0)
  assert float(out.metrics["aux_loss"]) == 0.0


def test_batchtopk(x):
  cfg = families.make_config("batchtopk", d=D, n=N, k=K, aux_k=None)
  p0 = random_params("batchtopk", cfg)
  mask = R.batch_topk_mask(R.relu(R.preact(p0, x)), B * K)

  def ref(p):
    f = R.relu(R.preact(p, x)) * mask
    return R.recon(x, f @ p["W_dec"] + p["b_dec"])

  out = assert_match("batchtopk", cfg, ref, p0, x)
  assert int(np.sum(np.asarray(out.codes) > 0)) == B * K


def test_batchtopk_threshold_ema(x):
  cfg = families.make_config("batchtopk", d=D, n=N, k=K, aux_k=None, threshold_start=1000)
  p0 = random_params("batchtopk", cfg)
  z0 = R.relu(R.preact(p0, x))
  m = np.min(z0[R.batch_topk_mask(z0, B * K)])
  st = families.batchtopk.init_state(cfg)
  _, _, out = jax_loss_grad("batchtopk", p0, st, x, cfg, 999)
  assert float(out.state["threshold"]) == -1.0           # not yet
  _, _, out = jax_loss_grad("batchtopk", p0, st, x, cfg, 1000)
  assert np.isclose(float(out.state["threshold"]), m, rtol=1e-6)   # first value = the minimum
  st2 = dict(st, threshold=jnp.float32(0.5))
  _, _, out = jax_loss_grad("batchtopk", p0, st2, x, cfg, 1001)
  assert np.isclose(float(out.state["threshold"]), 0.999 * 0.5 + 0.001 * m, rtol=1e-6)
  # Inference encode: f = z * 1[z > theta].
  codes = families.batchtopk.encode(nest_f32(p0), st2, jnp.asarray(x, jnp.float32), cfg)
  np.testing.assert_allclose(np.asarray(codes), np.where(z0 > 0.5, z0, 0.0), rtol=1e-5,
                             atol=1e-6)


def nest_f32(p64):
  return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), nest(p64))


@pytest.mark.parametrize("l0_target", [None, 4.0])
def test_jumprelu_pseudo_derivatives(x, l0_target):
  """Gradients follow the SPEC's straight-through pseudo-derivatives exactly (analytic, float64)."""
  eps = 0.05     # a wide rectangle so that several (pi - theta) fall inside the kernel
  cfg = families.make_config("jumprelu", d=D, n=N, l0_coef=0.2, bandwidth=eps, l0_target=l0_target)
  p = random_params("jumprelu", cfg, seed=3)
  W_enc, b_enc, W_dec, b_dec = p["W_enc"], p["b_enc"], p["W_dec"], p["b_dec"]
  theta = np.exp(p["log_threshold"])
  pi = x @ W_enc + b_enc
  H = (pi > theta).astype(float)
  Kr = (np.abs((pi - theta) / eps) < 0.5).astype(float)
  assert Kr.sum() > 0, "test data should exercise the kernel"
  f = pi * H
  r = x - (f @ W_dec + b_dec)
  l0 = H.sum(1).mean()
  if l0_target is None:
    sparsity, dsp_dl0 = l0, 1.0
  else:
    sparsity, dsp_dl0 = (l0 / l0_target - 1) ** 2, 2 * (l0 / l0_target - 1) / l0_target
  want_loss = np.mean(np.sum(r ** 2, 1)) + 0.2 * sparsity
  g_xhat = -2 * r / B
  g_f = g_xhat @ W_dec.T
  g_pi = g_f * H                                             # df/dpi = H, dH/dpi = 0
  g_theta = np.sum(g_f * (-(theta / eps) * Kr), 0)           # df/dtheta
  g_theta += 0.2 * dsp_dl0 * np.sum(-(1 / eps) * Kr, 0) / B  # dH/dtheta
  want = {"W_dec": f.T @ g_xhat, "b_dec": g_xhat.sum(0), "W_enc": x.T @ g_pi,
          "b_enc": g_pi.sum(0), "log_threshold": g_theta * theta}
  loss, g, _ = jax_loss_grad("jumprelu", p, jumprelu.init_state(cfg), x, cfg, 0)
  assert abs(loss - want_loss) <= TOL * abs(want_loss)
  for k, v in want.items():
    assert np.linalg.norm(g[k] - v) <= TOL * max(np.linalg.norm(v), 1e-8), k
  assert cfg.adam_b1 == 0.0   # the published default


def test_gated(x):
  cfg = families.make_config("gated", d=D, n=N, l1_coef=0.2)
  p0 = random_params("gated", cfg)
  gate0 = ((x - p0["b_dec"]) @ p0["W_enc"] + p0["b_gate"]) > 0
  Wd0, bd0 = p0["W_dec"].copy(), p0["b_dec"].copy()   # the aux term's stop-gradient decoder

  def ref(p):
    proj = (x - p["b_dec"]) @ p["W_enc"]
    pi_gate = proj + p["b_gate"]
    pi_mag = np.exp(p["r_mag"]) * proj + p["b_mag"]
    f = gate0 * R.relu(pi_mag)
    xhat = f @ p["W_dec"] + p["b_dec"]
    aux = R.recon(x, R.relu(pi_gate) @ Wd0 + bd0)
    return R.recon(x, xhat) + 0.2 * np.mean(np.sum(R.relu(pi_gate), -1)) + aux

  assert_match("gated", cfg, ref, p0, x)


def test_gated_aux_sends_no_gradient_to_decoder(x):
  cfg = families.make_config("gated", d=D, n=N, l1_coef=0.2)
  p = nest_f32(random_params("gated", cfg))
  aux = lambda q: gated.loss(q, gated.init_state(cfg), jnp.asarray(x, jnp.float32), cfg)[1].metrics[
      "aux_loss"]
  g = jax.grad(aux)(p)
  assert float(jnp.abs(g["W_dec"]).max()) == 0.0
  assert float(jnp.abs(g["W_enc"]).max()) > 0.0   # it does train the gate path


def test_pannealing(x):
  cfg = families.make_config("pannealing", d=D, n=N, l1_coef=0.3, anneal_start=100,
                             total_steps=1100)
  p0 = random_params("pannealing", cfg)
  step = 650    # (650 - 100) * 10 / 1000 -> index 6, p = 1 - 0.8 * 6 / 10 = 0.52
  st = dict(pannealing.init_state(cfg), p_index=jnp.int32(6), c=jnp.float32(0.7))
  p_val = 0.52

  def ref(p):
    f = R.relu(R.preact(p, x))
    fp = np.where(f > 0, np.abs(f) ** p_val, 0.0)
    return R.recon(x, f @ p["W_dec"] + p["b_dec"]) + 0.7 * np.mean(np.sum(fp, -1))

  out = assert_match("pannealing", cfg, ref, p0, x, state=st, step=step)
  assert np.isclose(float(out.metrics["p"]), p_val)


def test_pannealing_rescales_c_at_each_change(x):
  cfg = families.make_config("pannealing", d=D, n=N, l1_coef=0.3, anneal_start=100,
                             total_steps=1100, history=4)
  p0 = random_params("pannealing", cfg)
  hist_sp = np.array([1.0, 2.0, 3.0, 0.0])
  hist_spn = np.array([2.0, 2.0, 4.0, 0.0])
  st = dict(pannealing.init_state(cfg), p_index=jnp.int32(5), c=jnp.float32(0.7),
            hist_sp=jnp.asarray(hist_sp, jnp.float32), hist_sp_next=jnp.asarray(hist_spn, jnp.float32),
            hist_count=jnp.int32(3))
  _, _, out = jax_loss_grad("pannealing", p0, st, x, cfg, 650)   # index 6: a change
  assert np.isclose(float(out.state["c"]), 0.7 * (6.0 / 3) / (8.0 / 3), rtol=1e-6)
  assert int(out.state["hist_count"]) == 1
  _, _, out = jax_loss_grad("pannealing", p0, dict(st, p_index=jnp.int32(6)), x, cfg, 650)
  assert np.isclose(float(out.state["c"]), 0.7)                  # no change, no rescale


def test_pannealing_keeps_c_when_the_next_p_history_is_all_zero(x):
  """Batches with no active code leave S_p = S_p_next = 0 in the history: at the next change of
  p the ratio is undefined and c is kept (ratio 1), not divided by the 1e-30 guard (mutation gap
  pannealing.loss `mean_spn > 0`). Hand value: c stays 0.7 and the loss uses it."""
  cfg = families.make_config("pannealing", d=D, n=N, l1_coef=0.3, anneal_start=100,
                             total_steps=1100, history=4)
  p0 = random_params("pannealing", cfg)
  st = dict(pannealing.init_state(cfg), p_index=jnp.int32(5), c=jnp.float32(0.7),
            hist_count=jnp.int32(3))           # three batches recorded, all of them zero
  _, _, out = jax_loss_grad("pannealing", p0, st, x, cfg, 650)   # index 6: a change
  assert float(out.state["c"]) == pytest.approx(0.7, rel=1e-7)
  assert float(out.metrics["c"]) == pytest.approx(0.7, rel=1e-7)
  f = R.relu(R.preact(p0, x))
  want = R.recon(x, f @ p0["W_dec"] + p0["b_dec"]) + 0.7 * np.mean(np.sum(
      np.where(f > 0, np.abs(f) ** 0.52, 0.0), -1))
  assert float(out.metrics["loss"]) == pytest.approx(want, rel=1e-5)


def test_pannealing_finite_at_exact_zeros():
  cfg = families.make_config("pannealing", d=D, n=N, anneal_start=0, total_steps=100)
  p = families.pannealing.init(jax.random.PRNGKey(0), cfg)
  p = dict(p, b_enc=jnp.full((N,), -1e3).at[0].set(0.0), b_dec=jnp.zeros(D))
  x0 = jnp.zeros((4, D))   # every code is exactly 0 (latent 0 sits exactly at the kink)
  st = pannealing.init_state(cfg)
  for step in (0, 50, 99):
    (l, out), g = jax.value_and_grad(
        lambda q: pannealing.loss(q, st, x0, cfg, step=step), has_aux=True)(p)
    assert np.isfinite(float(l))
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree_util.tree_leaves(g))


@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_matryoshka(x, reduce):
  cfg = families.make_config("matryoshka", d=D, n=N, k=K, aux_k=None, group_sizes=(5, 7),
                             prefix_reduce=reduce)
  p0 = random_params("matryoshka", cfg)
  mask = R.batch_topk_mask(R.relu(R.preact(p0, x)), B * K)

  def ref(p):
    f = R.relu(R.preact(p, x)) * mask
    terms = [R.recon(x, f[:, :m] @ p["W_dec"][:m] + p["b_dec"]) for m in (5, 12)]
    return np.sum(terms) if reduce == "sum" else np.mean(terms)

  assert_match("matryoshka", cfg, ref, p0, x)


@pytest.mark.parametrize("terms", [(True, True, True), (True, False, False), (False, True, True)])
def test_stacked(x, terms):
  cfg = families.make_config("stacked", d=D, n=N, k=4, n2=6, k2=2, use_full=terms[0],
                             use_level1=terms[1], use_level2=terms[2])
  p0 = random_params("stacked", cfg)
  z1 = R.relu(R.preact({k[5:]: v for k, v in p0.items() if k.startswith("sae1/")}, x))
  m1 = R.row_topk_mask(z1, 4)
  p2_0 = {k[5:]: v for k, v in p0.items() if k.startswith("sae2/")}
  m2 = R.row_topk_mask(R.relu(R.preact(p2_0, z1 * m1)), 2)

  def ref(p):
    p1 = {k[5:]: v for k, v in p.items() if k.startswith("sae1/")}
    p2 = {k[5:]: v for k, v in p.items() if k.startswith("sae2/")}
    f1 = R.relu(R.preact(p1, x)) * m1
    f2 = R.relu(R.preact(p2, f1)) * m2
    f1hat = f2 @ p2["W_dec"] + p2["b_dec"]
    total = 0.0
    if terms[0]:
      total += R.recon(x, f1hat @ p1["W_dec"] + p1["b_dec"])
    if terms[1]:
      total += R.recon(x, f1 @ p1["W_dec"] + p1["b_dec"])
    if terms[2]:
      total += R.recon(f1, f1hat)
    return total

  assert_match("stacked", cfg, ref, p0, x)


@pytest.mark.parametrize("name", sorted(families.FAMILIES))
def test_fold_scale_reproduces_raw_activations(x, name):
  """With s folded in, raw activations give s x the codes and s x the reconstruction (SPEC 1)."""
  extra = {"group_sizes": (5, 7)} if name == "matryoshka" else {}
  if name in ("topk", "batchtopk", "matryoshka", "stacked"):
    extra["k"] = K
  cfg = families.make_config(name, d=D, n=N, **extra)
  fam = families.get_family(name)
  p = nest_f32(random_params(name, cfg))
  st = fam.init_state(cfg)
  if "threshold" in st:
    st = dict(st, threshold=jnp.float32(0.2))
  s = 3.7
  xs = jnp.asarray(x, jnp.float32)
  codes = fam.encode(p, st, xs, cfg)
  pf, sf = fam.fold_scale(p, st, s, cfg)
  codes_raw = fam.encode(pf, sf, s * xs, cfg)
  np.testing.assert_allclose(np.asarray(codes_raw), s * np.asarray(codes), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(fam.decode(pf, codes_raw, cfg)),
                             s * np.asarray(fam.decode(p, codes, cfg)), rtol=1e-4, atol=1e-4)


def test_annealed_k():
  cfg = families.make_config("batchtopk", d=64, n=128, k=4, k_anneal_steps=100)
  assert int(base.annealed_k(cfg, 0)) == 64
  assert int(base.annealed_k(cfg, 50)) == 34
  assert int(base.annealed_k(cfg, 100)) == 4 and int(base.annealed_k(cfg, 10**6)) == 4


def test_auxk_dead_boundary_is_exactly_dead_tokens(x):
  """A latent silent for exactly dead_tokens tokens is dead; one token fewer is alive."""
  cfg = families.make_config("topk", d=D, n=N, k=K, aux_k=512, dead_tokens=100)
  p0 = random_params("topk", cfg)
  since = np.zeros(N, np.int64)
  since[[1, 6, 10]] = 100                  # exactly the window: dead
  since[[2, 5]] = 99                       # one short: alive
  state = {"tokens_since_fired": jnp.asarray(since, jnp.int32)}
  _, _, out = jax_loss_grad("topk", p0, state, x, cfg, 500)
  z0 = R.relu(R.preact(p0, x))
  e0 = x - ((z0 * R.row_topk_mask(z0, K)) @ p0["W_dec"] + p0["b_dec"])
  want = R.auxk(p0, z0, e0, since >= 100, 512, D)
  assert want > 0 and not np.isclose(want, R.auxk(p0, z0, e0, since > 100, 512, D))
  np.testing.assert_allclose(float(out.metrics["aux_loss"]), want, rtol=1e-5)
  fired = ((z0 * R.row_topk_mask(z0, K)) > 0).any(0)        # counters after this batch of B
  after = np.where(fired, 0, since + B)
  np.testing.assert_array_equal(np.asarray(out.state["tokens_since_fired"]), after)
  assert float(out.metrics["dead_fraction"]) == pytest.approx(np.mean(after >= 100))
  for edge in (99, 100):                   # a single latent at the boundary
    s1 = np.where(np.arange(N) == 4, edge, 0)
    _, _, o = jax_loss_grad("topk", p0, {"tokens_since_fired": jnp.asarray(s1, jnp.int32)}, x,
                            cfg, 500)
    assert (float(o.metrics["aux_loss"]) > 0) == (edge == 100), edge


def _weiszfeld64(pts, iters=2000):
  y = pts.mean(0)
  for _ in range(iters):
    w = 1.0 / np.maximum(np.linalg.norm(pts - y, axis=1), 1e-12)
    y = (w[:, None] * pts).sum(0) / w.sum()
  return y


def test_topk_b_dec_starts_at_the_geometric_median():
  """A skewed first batch (a few far outliers): the geometric median, not the mean (SPEC 2.2)."""
  rng = np.random.default_rng(4)
  pts = rng.normal(size=(64, D))
  pts[:6] += 40.0                          # outliers drag the mean, barely move the median
  cfg = families.make_config("topk", d=D, n=N, k=K)
  p = families.topk.init(jax.random.PRNGKey(0), cfg, jnp.asarray(pts, jnp.float32))
  gm = _weiszfeld64(pts)
  assert np.linalg.norm(gm - pts.mean(0)) > 2.0
  np.testing.assert_allclose(np.asarray(p["b_dec"], np.float64), gm, atol=2e-3)


def test_dead_window_default_is_ten_million_tokens():
  """SPEC 2.2: a latent is dead after 10M tokens without firing (the default)."""
  for name in ("topk", "batchtopk", "relu"):
    assert families.make_config(name, d=D, n=64).dead_tokens == 10_000_000


def test_stacked_default_loss_has_all_three_terms():
  """SPEC 2.8: the default Stacked loss is the full path + Level 1 + Level 2 terms."""
  cfg = families.make_config("stacked", d=D, n=64, k=4, n2=8, k2=2)
  assert (cfg.use_full, cfg.use_level1, cfg.use_level2) == (True, True, True)


@pytest.mark.parametrize("case", ["random", "masked", "ties", "k_above_hint"])
def test_batchtopk_batch_select_equals_numpy(case):
  """batchtopk.batch_select: the block-maxima winners scattered into the mask, or (ties, k
  above the static hint) ops.batch_topk_mask's position tie-break; both against NumPy."""
  rng = np.random.default_rng(7)
  z = np.maximum(rng.normal(size=(48, 160)), 0.0).astype(np.float32)
  valid, k, hint = None, 3, None
  if case == "masked":
    valid = rng.random(48) < 0.6
  if case == "ties":
    z = np.round(z * 4.0) / 4.0          # many equal values at the threshold
  if case == "k_above_hint":
    k, hint = 5, 3
  mask = None if valid is None else jnp.asarray(valid)
  got = np.asarray(families.batchtopk.batch_select(jnp.asarray(z), k, mask, k_hint=hint))
  n_rows = 48 if valid is None else int(valid.sum())
  want = R.batch_topk_mask(z, n_rows * k, None if valid is None else valid[:, None])
  np.testing.assert_array_equal(got, want)
