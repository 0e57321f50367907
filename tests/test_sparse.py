"""The sparse code path (csae_jax/sparse.py) against the dense one: loss, gradients, state."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from csae_jax import ops, sparse
from csae_jax.families import get_family, make_config

B, D, N, K = 32, 16, 256, 4
FAMS = {
    "topk": {},
    "topk_anneal": {"k_anneal_steps": 100, "k_anneal_from": 6},
    "batchtopk": {},
    "matryoshka": {"group_sizes": (32, 96, 128)},
}


def setup(name, sparse_mode, seed=0, **extra):
  fam = name.split("_")[0]
  cfg = make_config(fam, d=D, n=N, k=K, sparse=sparse_mode, **{**FAMS[name], **extra})
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(N, D)).astype(np.float32)
  w /= np.linalg.norm(w, axis=1, keepdims=True)
  p = {"W_enc": jnp.asarray(rng.normal(size=(D, N)), jnp.float32) * 0.5,
       "b_enc": jnp.asarray(rng.normal(size=N) * 0.1, jnp.float32),
       "W_dec": jnp.asarray(w), "b_dec": jnp.asarray(rng.normal(size=D) * 0.1, jnp.float32)}
  x = jnp.asarray(rng.normal(size=(B, D)), jnp.float32)
  return get_family(fam), cfg, p, x


def run(name, mode, step=50, row_mask=None, dead=False, x_scale=1.0, **extra):
  fam, cfg, p, x = setup(name, mode, **extra)
  x = x.at[0].multiply(x_scale)
  state = fam.init_state(cfg)
  if dead:
    state = dict(state, tokens_since_fired=jnp.where(jnp.arange(N) % 3 == 0, 10 ** 8, 0))
  fn = lambda p: fam.loss(p, state, x, cfg, step=step, row_mask=row_mask)
  (loss, out), g = jax.jit(jax.value_and_grad(fn, has_aux=True))(p)
  return loss, out, g


def assert_same(a, b, tol=2e-5, row_mask=None):
  la, oa, ga = a
  lb, ob, gb = b
  np.testing.assert_allclose(la, lb, rtol=tol, atol=tol)
  for k in ga:
    np.testing.assert_allclose(ga[k], gb[k], rtol=tol, atol=tol, err_msg=k)
  for k in oa.state:
    np.testing.assert_allclose(oa.state[k], ob.state[k], rtol=tol, atol=tol, err_msg=k)
  for k in oa.metrics:
    np.testing.assert_allclose(oa.metrics[k], ob.metrics[k], rtol=tol, atol=tol, err_msg=k)
  rows = np.ones(oa.codes.shape[0], bool) if row_mask is None else np.asarray(row_mask)
  # Per-row TopK ranks rows outside the mask too in the dense path; nothing reads them.
  np.testing.assert_allclose(oa.codes[rows], ob.codes[rows], rtol=tol, atol=tol)


@pytest.mark.parametrize("name", sorted(FAMS))
@pytest.mark.parametrize("masked", [False, True])
def test_sparse_equals_dense(name, masked):
  mask = jnp.asarray(np.random.default_rng(3).random(B) < 0.6) if masked else None
  assert_same(run(name, "on", row_mask=mask), run(name, "off", row_mask=mask), row_mask=mask)


@pytest.mark.parametrize("name", ["topk", "batchtopk", "matryoshka"])
def test_sparse_auxk_equals_dense(name):
  assert_same(run(name, "on", dead=True, aux_k=8), run(name, "off", dead=True, aux_k=8))


def test_annealing_falls_back_to_dense():
  # k(step=0) = 64 > 16 candidates: the bound fails, the dense branch answers.
  on = run("topk_anneal", "on", step=0, k_anneal_from=64)
  off = run("topk_anneal", "off", step=0, k_anneal_from=64)
  assert float(on[1].metrics["l0"]) > 16
  assert_same(on, off)


@pytest.mark.parametrize("scale", [50.0, 1.0])
def test_saturated_rows_are_exact(scale):
  """Row 0 holds far more than its 16 candidates: re-ranked in full, same winners as dense."""
  fam, cfg, p, x = setup("batchtopk", "on")
  x = x.at[0].multiply(scale)
  z = jax.nn.relu(sparse.preact(p, x))
  rows, cols, valid, fits = sparse.select_batch(z, K)
  assert bool(fits)
  got = np.zeros((B, N), bool)
  got[np.asarray(rows)[np.asarray(valid)], np.asarray(cols)[np.asarray(valid)]] = True
  want = np.asarray(ops.batch_topk_mask(z, B * K))
  np.testing.assert_array_equal(got, want)
  if scale > 1:
    assert want[0].sum() > 16
    assert_same(run("batchtopk", "on", x_scale=scale), run("batchtopk", "off", x_scale=scale),
                tol=1e-4)   # values x 50: float32 round-off of sums near 1e3


def test_auto_mode():
  _, cfg, _, _ = setup("batchtopk", "auto")
  assert not sparse.enabled(cfg, per_row=False)        # k / n = 4 / 256 = 1/64: dense
  assert sparse.enabled(cfg.replace(n=8192), per_row=False)   # 4 / 8192 <= 1/128
  assert sparse.enabled(cfg.replace(n=512), per_row=False)    # 4 / 512 = 1/128
  assert not sparse.enabled(cfg.replace(n=511), per_row=False)
  assert sparse.enabled(cfg.replace(n=8192, sparse="on").replace(n=32), per_row=False)
  assert not sparse.enabled(cfg.replace(n=8192, sparse="off"), per_row=False)
  with pytest.raises(ValueError, match="sparse"):
    make_config("topk", d=D, n=N, k=K, sparse="maybe")


@pytest.mark.parametrize("given_pre", [False, True])
@pytest.mark.parametrize("n", [10, 30])     # entries K = 17 > n: row segment sums; K <= n: columns
def test_entry_values_gradients_match_autodiff_of_gathers(given_pre, n):
  """The hand-written backward of sparse.entry_values (row segment sums) against autodiff of the
  plain gather formula, for every input that carries a gradient (W_enc, b_enc, b_dec and x, which
  level >= 2 differentiates), with repeated rows and columns and padding entries."""
  d, b, k = 6, 5, 17
  ks = jax.random.split(jax.random.PRNGKey(3), 8)
  params = {"W_enc": jax.random.normal(ks[0], (d, n)), "b_enc": jax.random.normal(ks[1], (n,)),
            "b_dec": jax.random.normal(ks[2], (d,)) * 0.3}
  x = jax.random.normal(ks[3], (b, d))
  rows = jax.random.randint(ks[4], (k,), 0, b)
  cols = jax.random.randint(ks[5], (k,), 0, n)
  valid = jnp.arange(k) < k - 3
  weight = jax.random.normal(ks[6], (k,))

  def plain(p, xx):
    pre = jnp.sum((xx[rows] - p["b_dec"]) * p["W_enc"][:, cols].T, -1) + p["b_enc"][cols]
    return jnp.sum(weight * jnp.where(valid, jax.nn.relu(pre), 0.0))

  def ours(p, xx):
    pre = None
    if given_pre:   # as the float32 selecting forward hands them over (computed another way)
      pre = ((xx - p["b_dec"]) @ p["W_enc"] + p["b_enc"])[rows, cols]
    return jnp.sum(weight * sparse.entry_values(p, xx, rows, cols, valid, pre))

  np.testing.assert_allclose(ours(params, x), plain(params, x), rtol=1e-5)
  got = jax.grad(ours, argnums=(0, 1))(params, x)
  want = jax.grad(plain, argnums=(0, 1))(params, x)
  for a, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
    assert float(jnp.abs(w).max()) > 0
    np.testing.assert_allclose(np.asarray(a), np.asarray(w), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,c", [((37, 1024), 8), ((5, 4096), 16), ((6, 100), 4)])
def test_row_top_k_equals_lax_top_k(shape, c):
  """Block-maxima top-k against lax.top_k on continuous scores (distinct values), including rows
  whose winners crowd into one block and rows with many negatives (masked rows are -1)."""
  z = np.array(jax.random.normal(jax.random.PRNGKey(shape[1]), shape))
  z[0, :c] = 10.0 + np.arange(c)           # every winner of row 0 in the first block
  z[1] = -1.0 - np.abs(z[1])               # no positive score
  z = jnp.asarray(z)
  vals, idx = sparse.row_top_k(z, c)
  want_vals, want_idx = jax.lax.top_k(z, c)
  np.testing.assert_array_equal(np.asarray(vals), np.asarray(want_vals))
  np.testing.assert_array_equal(np.asarray(idx), np.asarray(want_idx))


@pytest.mark.parametrize("case", ["duplicates", "all_distinct", "one_column", "last_column"])
def test_column_sums_equals_float64_scatter(case):
  """column_sums (compact, then a sorted column scatter) against a NumPy float64 np.add.at."""
  rng = np.random.default_rng(7)
  k, d, n = 40, 6, 50
  cols = {"duplicates": rng.integers(0, 12, k),
          "all_distinct": rng.permutation(n)[:k],
          "one_column": np.full(k, 17),
          "last_column": np.r_[np.full(k // 2, n - 1), rng.integers(0, n, k - k // 2)]}[case]
  per_entry = rng.normal(size=(k, d)).astype(np.float32)
  per_entry[::5] = 0.0                      # padding entries carry zeros
  want = np.zeros((d, n))
  np.add.at(want.T, cols, per_entry.astype(np.float64))
  got = jax.jit(sparse.column_sums, static_argnums=2)(
      jnp.asarray(per_entry), jnp.asarray(cols, jnp.int32), n)
  assert got.shape == (d, n)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def _numpy_batch_topk(pre, k_total, valid_rows):
  """Reference: the k_total largest relu(pre) over valid rows, by a full NumPy sort."""
  s = np.maximum(np.asarray(pre, np.float64), 0.0)
  s[~valid_rows] = -1.0
  order = np.argsort(-s, axis=None, kind="stable")[:k_total]
  want = np.zeros(s.shape, bool)
  want.flat[order] = True
  return want


@pytest.mark.parametrize("b,n,k", [(64, 2000, 3), (40, 50, 2), (30, 97, 4), (8, 4096, 1),
                                   (200, 256, 1)])
@pytest.mark.parametrize("masked", [False, True])
def test_select_batch_by_block_maxima_equals_full_sort(b, n, k, masked):
  """Block sizes 16, 10 (n = 50) and 1 (n = 97, prime); fewer superblocks than winners
  (b = 40, n = 50); one row holding most winners; a row mask: the same set as a full sort."""
  rng = np.random.default_rng(b * n + k)
  pre = rng.normal(size=(b, n)).astype(np.float32)
  pre[1] += 3.0                                 # row 1 holds far more than its share
  valid = rng.random(b) < 0.7 if masked else np.ones(b, bool)
  valid[1] = True
  mask = jnp.asarray(valid) if masked else None
  rows, cols, ok, fits = sparse.select_batch(jnp.asarray(pre), k, mask)
  assert bool(fits)
  got = np.zeros((b, n), bool)
  got[np.asarray(rows)[np.asarray(ok)], np.asarray(cols)[np.asarray(ok)]] = True
  want = _numpy_batch_topk(pre, int(valid.sum()) * k, valid)
  np.testing.assert_array_equal(got, want)
  assert got[1].sum() > k


def test_select_batch_falls_back_on_ties_and_too_few_positive():
  pre = np.random.default_rng(0).normal(size=(16, 64)).astype(np.float32)
  # A tie at the threshold: the dense path's position tie-break decides, so fits is False.
  tied = pre.copy()
  flat = np.sort(np.maximum(tied, 0).ravel())[::-1]
  tied[tied == flat[32]] = flat[31]
  assert not bool(sparse.select_batch(jnp.asarray(tied), 2)[3])
  assert bool(sparse.select_batch(jnp.asarray(pre), 2)[3])
  # Fewer positive scores than K = 32.
  few = np.full((16, 64), -1.0, np.float32)
  few[0, :5] = 1.0 + np.arange(5)
  assert not bool(sparse.select_batch(jnp.asarray(few), 2)[3])


@pytest.mark.parametrize("name", ["batchtopk", "matryoshka", "topk"])
def test_bfloat16_selecting_forward_is_close_to_float32(name):
  """compute_dtype bfloat16 (SPEC-free speed option, docs/speed.md section 4): the encoder matmul
  runs on bf16 inputs with float32 accumulation, the winners' values are its outputs (as the
  release's autocast), parameters and gradients stay float32. Against the float32 dense path:
  the same winners on these data, losses and gradients within bf16 rounding."""
  f32 = run(name, "off")
  b16 = run(name, "on", compute_dtype="bfloat16")
  np.testing.assert_allclose(b16[0], f32[0], rtol=2e-2)
  np.testing.assert_array_equal(np.asarray(b16[1].codes) > 0, np.asarray(f32[1].codes) > 0)
  for k in f32[2]:
    assert b16[2][k].dtype == jnp.float32
    err = float(jnp.abs(b16[2][k] - f32[2][k]).max())
    assert err <= 2e-2 * float(jnp.abs(f32[2][k]).max()) + 1e-6, (k, err)
  fam, cfg, p, x = setup(name, "on", compute_dtype="bfloat16")
  fn = lambda p: fam.loss(p, fam.init_state(cfg), x, cfg, step=50)[0]
  hlo = jax.jit(jax.grad(fn)).lower(p).as_text()
  assert "bf16" in hlo and "dot_general" in hlo
