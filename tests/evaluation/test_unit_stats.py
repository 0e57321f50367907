"""Per-unit dashboard statistics against NumPy float64 references and hand-computed values."""
import numpy as np
import pytest

from csae_jax.evaluation import unit_stats


def _codes(seed=0, n_img=40, n=7):
  rng = np.random.default_rng(seed)
  v = rng.gamma(2.0, 1.0, (n_img, n)) * (rng.random((n_img, n)) < 0.55)
  v[:, 3] = 0.0                       # a unit that never fires
  v[:5, 4] = [0.5, 0.5, 0.5, 0.0, 2.0]
  v[5:, 4] = 0.0                      # ties, few firing images
  return v.astype(np.float32)


def test_histograms_match_numpy_histogram():
  v = _codes()
  counts, hi = unit_stats.histograms(v, 9, block=3)
  for u in range(v.shape[1]):
    pos = v[:, u][v[:, u] > 0].astype(np.float64)
    if pos.size == 0:
      assert counts[u].sum() == 0 and hi[u] == 0
      continue
    ref, edges = np.histogram(pos, bins=9, range=(0.0, pos.max()))
    np.testing.assert_array_equal(counts[u], ref)
    assert hi[u] == pytest.approx(edges[-1])
  # Hand case: unit 4 fires on 0.5, 0.5, 0.5, 2.0 -> bins of width 2/9: 0.5 in bin 2, 2.0 last.
  assert counts[4].tolist() == [0, 0, 3, 0, 0, 0, 0, 0, 1]


def _reference_quantiles(col, bands, per_band):
  ranked = sorted([(-float(x), i) for i, x in enumerate(col) if x > 0])
  f = len(ranked)
  out = []
  for q in range(bands):
    lo, hi = q * f // bands, (q + 1) * f // bands
    row = []
    for j in range(per_band):
      if j < hi - lo:
        row.append(ranked[lo + int(np.floor((j + 0.5) * (hi - lo) / per_band))][1])
      else:
        row.append(-1)
    out.append(row)
  return out


def test_quantile_examples_match_a_loop():
  v = _codes(1)
  imgs, vals = unit_stats.quantile_examples(v, 4, 3, block=2)
  for u in range(v.shape[1]):
    ref = _reference_quantiles(v[:, u], 4, 3)
    assert imgs[u].tolist() == ref
    for q in range(4):
      for j in range(3):
        i = ref[q][j]
        assert vals[u, q, j] == (v[i, u] if i >= 0 else 0.0)
  # Unit 4: firing images 4 (2.0), 0, 1, 2 (0.5, ties by index): one per band, band 0 the top.
  assert imgs[4, :, 0].tolist() == [4, 0, 1, 2]
  assert (imgs[3] == -1).all()


def test_label_breakdown_matches_a_loop():
  v = _codes(2)
  labels = np.random.default_rng(3).integers(0, 5, v.shape[0])
  labels[7] = -1                      # an unlabelled image is ignored
  ids, cnt, share = unit_stats.label_breakdown(v, labels, 3, block=4)
  for u in range(v.shape[1]):
    col = np.maximum(v[:, u].astype(np.float64), 0)
    mass = {l: col[labels == l].sum() for l in range(5)}
    ranked = sorted((-m, l) for l, m in mass.items() if m > 0)[:3]
    want = [l for _, l in ranked] + [-1] * (3 - len(ranked))
    assert ids[u].tolist() == want
    for k, l in enumerate(want):
      if l < 0:
        continue
      assert cnt[u, k] == int(((labels == l) & (col > 0)).sum())
      assert share[u, k] == pytest.approx(mass[l] / col.sum(), rel=1e-6)


def test_parent_cosines_against_numpy():
  rng = np.random.default_rng(4)
  a1, a2 = rng.normal(size=(6, 5)), rng.normal(size=(2, 5))
  parent = np.array([0, 1, -1, 0, 1, 1])
  got = unit_stats.parent_cosines(a1, parent, a2)
  for u, p in enumerate(parent):
    if p < 0:
      assert np.isnan(got[u])
    else:
      ref = a1[u] @ a2[p] / np.linalg.norm(a1[u]) / np.linalg.norm(a2[p])
      assert got[u] == pytest.approx(ref, abs=1e-12)
  # Post-hoc clusters: the parent direction is the mean of the unit-normalised child atoms.
  got = unit_stats.parent_cosines(a1, parent)
  n1 = a1 / np.linalg.norm(a1, axis=1, keepdims=True)
  c = n1[parent == 1].mean(0)
  assert got[4] == pytest.approx(n1[4] @ c / np.linalg.norm(c), abs=1e-12)


def test_compute_density_and_heat_pooling():
  v = _codes()
  s = unit_stats.compute(v, None, bins=5)
  np.testing.assert_allclose(s["density"], (v > 0).mean(0))
  assert (s["label_ids"] == -1).all()
  assert unit_stats.heat_grid(16) == (0, 4, 4)
  assert unit_stats.heat_grid(17) == (1, 4, 4)
  assert unit_stats.heat_grid(12) == (0, 1, 12)
  t = np.arange(1 + 16 * 16, dtype=np.float64)            # a CLS token then a 16 x 16 grid
  cells, r, c = unit_stats.pool_heat(t)
  assert (r, c) == (8, 8)
  g = t[1:].reshape(16, 16)
  assert cells[0] == pytest.approx(g[:2, :2].mean())
  assert cells[-1] == pytest.approx(g[14:, 14:].mean())


def test_token_heatmaps_average_to_the_pass_image_codes():
  """Codes recomputed on the pass's own chunks: each map's token mean is the image-level code,
  also for a batch-dependent (BatchTopK) encoder and images that straddle chunks."""
  import jax.numpy as jnp
  from csae_jax.evaluation import codes as codes_lib
  from csae_jax.evaluation.sources import ArraySource
  from csae_jax.evaluation.subjects import Subject, batch_topk_codes
  rng = np.random.default_rng(5)
  d, n1 = 6, 5
  w = jnp.asarray(rng.normal(size=(d, n1)), jnp.float32)

  def level1(x, valid):
    dense = jnp.maximum(x @ w, 0.0)
    codes = batch_topk_codes(dense, 2, valid, 4)
    return codes, dense, codes @ w.T

  offsets = np.array([0, 7, 9, 20, 29, 36])
  src = ArraySource(rng.normal(size=(36, d)).astype(np.float32), offsets)
  subject = Subject("flat", n1, None, d, level1, None, np.asarray(w.T), None)
  pr = codes_lib.run_pass(subject, src, codes_lib.PassOptions(chunk_tokens=8, coactivation=False))
  pairs = [(i, u) for i in range(5) for u in range(n1)]
  got = unit_stats.token_codes(subject, src, pairs, 8)
  for (i, u), t in got.items():
    assert t.shape == (offsets[i + 1] - offsets[i],)
    assert t.mean() == pytest.approx(pr.image_codes[i, u], abs=1e-6)
  top_i, top_v = codes_lib.top_images(pr.image_codes, 3)
  h = unit_stats.heatmaps(subject, src, top_i, top_v, 2, 8)
  u = int(np.argmax(top_v[:, 0]))
  i = int(top_i[u, 0])
  cells, r, c = unit_stats.pool_heat(got[(i, u)])
  assert tuple(h["heat_shape"][u, 0]) == (r, c)
  assert h["heat_max"][u, 0] == pytest.approx(cells.max())
  assert h["heat"][u, 0, :cells.size].max() == 255


@pytest.mark.parametrize("n_tokens", [4, 12, 37, 100, 577, 1025])
def test_pool_heat_matches_block_means(n_tokens):
  t = np.random.default_rng(n_tokens).random(n_tokens)
  cells, r, c = unit_stats.pool_heat(t)
  skip, rows, cols = unit_stats.heat_grid(n_tokens)
  g = t[skip:].reshape(rows, cols)
  ref = [g[np.ix_(a, b)].mean() for a in np.array_split(np.arange(rows), r)
         for b in np.array_split(np.arange(cols), c)]
  np.testing.assert_allclose(cells, ref, rtol=1e-6)
  assert r * c <= unit_stats.HEAT_CELLS
