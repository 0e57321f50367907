"""The chunked evaluation pass (SPEC 4) against NumPy float64 references, with ragged chunks."""
import jax
import numpy as np
import pytest

from csae_jax.evaluation import codes
from csae_jax.evaluation import subjects
from csae_jax.evaluation.sources import ArraySource
from csae_jax.models import build_model

D, N1, N2 = 6, 16, 5


def _params(model, seed):
  rng = np.random.default_rng(seed)
  params, state = model.init(jax.random.PRNGKey(seed), rng.normal(size=(8, D)).astype(np.float32))
  params = jax.tree_util.tree_map(np.asarray, params)
  if "b_enc" in params:
    params["b_enc"] = (0.3 * rng.normal(size=params["b_enc"].shape)).astype(np.float32)
  return params, state


@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(0)
  lens = np.array([5, 0, 9, 3, 7, 1, 12])   # an image with no tokens; images cross chunks
  offsets = np.concatenate([[0], np.cumsum(lens)])
  x = rng.normal(size=(offsets[-1], D)).astype(np.float32)
  return ArraySource(x, offsets, embeddings=rng.normal(size=(len(lens), 3)))


def _relu(params, x):
  return np.maximum((x - params["b_dec"]) @ params["W_enc"] + params["b_enc"], 0.0)


def _reference(x, offsets, codes_fn, dense_fn, l2_fn, params):
  """float64 loops over tokens: image means, alive, co-activation counts, FVU, L0, dead."""
  x = x.astype(np.float64)
  c = codes_fn(x)
  dense = dense_fn(x)
  n_img = len(offsets) - 1
  v = np.zeros((n_img, c.shape[1]))
  for i in range(n_img):
    if offsets[i + 1] > offsets[i]:
      v[i] = c[offsets[i]:offsets[i + 1]].mean(0)
  alive = np.zeros(c.shape[1], bool)
  coact = np.zeros((c.shape[1], N2), np.int64)
  s2 = l2_fn(x)
  for t in range(len(x)):
    top = np.argsort(-dense[t], kind="stable")[:12]
    top = [j for j in top if dense[t, j] > 1e-3]
    alive[top] = True
    if s2[t].max() > 1e-3:
      for j in top:
        coact[j, np.argmax(s2[t])] += 1
  if params is None:
    return v, alive, coact, None, None, None
  xhat = c @ params["W_dec"] + params["b_dec"]
  fvu = ((x - xhat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
  return v, alive, coact, fvu, (c > 0).sum(1).mean(), 1 - (c > 0).any(0).mean()


@pytest.mark.parametrize("chunk", [4, 10, 64])
def test_relu_pair_pass_matches_reference(data, chunk):
  m1 = build_model({"name": "relu", "d": D, "options": {"n": N1}})
  m2 = build_model({"name": "relu", "d": D, "options": {"n": N2}})
  p1, s1 = _params(m1, 1)
  p2, s2 = _params(m2, 2)
  subj = subjects.from_model(m1, p1, s1, model2=m2, params2=p2, state2=s2)
  res = codes.run_pass(subj, data, codes.PassOptions(chunk_tokens=chunk))
  v, alive, coact, fvu, l0, dead = _reference(
      data.tokens, data.token_offsets, lambda x: _relu(p1, x), lambda x: _relu(p1, x),
      lambda x: _relu(p2, x), p1)
  np.testing.assert_allclose(res.image_codes, v, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(res.alive, alive)
  np.testing.assert_array_equal(res.coact, coact)
  assert res.recon["fvu"] == pytest.approx(fvu, rel=1e-4)
  assert res.recon["l0"] == pytest.approx(l0, rel=1e-6)
  assert res.recon["dead_fraction"] == pytest.approx(dead)
  assert res.coact.sum() > 0


def test_batchtopk_batch_encoding_ranks_within_each_chunk(data):
  k, chunk = 2, 8
  m = build_model({"name": "batchtopk", "d": D, "options": {"n": N1, "k": k, "aux_k": None}})
  p, s = _params(m, 3)
  subj = subjects.from_model(m, p, s, encoding="batch")
  res = codes.run_pass(subj, data, codes.PassOptions(chunk_tokens=chunk, coactivation=False))
  x = data.tokens.astype(np.float64)
  z = _relu(p, x)
  c = np.zeros_like(z)
  for start in range(0, len(x), chunk):   # keep the k * rows largest entries of each chunk
    blk = z[start:start + chunk]
    keep = np.argsort(-blk, axis=None, kind="stable")[:k * len(blk)]
    flat = np.zeros(blk.size)
    flat[keep] = blk.reshape(-1)[keep]
    c[start:start + chunk] = flat.reshape(blk.shape)
  o = data.token_offsets
  v = np.stack([c[o[i]:o[i + 1]].mean(0) if o[i + 1] > o[i] else np.zeros(N1)
                for i in range(len(o) - 1)])
  np.testing.assert_allclose(res.image_codes, v, rtol=1e-5, atol=1e-6)
  assert res.recon["l0"] == pytest.approx(k, rel=1e-6)   # exactly k per token on average


def test_threshold_encoding_option(data):
  m = build_model({"name": "batchtopk", "d": D, "options": {"n": N1, "k": 2, "aux_k": None}})
  p, s = _params(m, 3)
  s = dict(s)
  s["threshold"] = np.float32(0.4)
  subj = subjects.from_model(m, p, s, encoding="threshold")
  res = codes.run_pass(subj, data, codes.PassOptions(chunk_tokens=5, coactivation=False))
  z = _relu(p, data.tokens.astype(np.float64))
  c = z * (z > 0.4)
  o = data.token_offsets
  assert res.image_codes[0] == pytest.approx(c[o[0]:o[1]].mean(0), abs=1e-6)


def test_matryoshka_groups_and_stacked_levels(data):
  mm = build_model({"name": "matryoshka", "d": D,
                    "options": {"n": N1 + N2, "k": 3, "group_sizes": [N1, N2], "aux_k": None}})
  p, s = _params(mm, 4)
  subj = subjects.from_model(mm, p, s, matryoshka_groups=(0, 1))
  assert (subj.n1, subj.n2) == (N1, N2)
  np.testing.assert_array_equal(subj.atoms2, p["W_dec"][N1:])
  res = codes.run_pass(subj, data, codes.PassOptions(chunk_tokens=64))
  z = _relu(p, data.tokens.astype(np.float64))
  _, alive, coact, *_ = _reference(data.tokens, data.token_offsets, lambda x: z[:, :N1],
                                   lambda x: z[:, :N1], lambda x: z[:, N1:], None)
  np.testing.assert_array_equal(res.coact, coact)
  swapped = subjects.from_model(mm, p, s, matryoshka_groups=(1, 0))
  assert (swapped.n1, swapped.n2) == (N2, N1)
  with pytest.raises(ValueError, match="different groups"):
    subjects.from_model(mm, p, s, matryoshka_groups=(1, 1))

  ms = build_model({"name": "stacked", "d": D, "options": {"n": N1, "k": 4, "n2": N2, "k2": 1}})
  p, s = _params(ms, 5)
  subj = subjects.from_model(ms, p, s)
  res = codes.run_pass(subj, data, codes.PassOptions(chunk_tokens=64))
  x = data.tokens.astype(np.float64)
  z1 = _relu(p["sae1"], x)
  f1 = np.where(z1 >= np.sort(z1, 1)[:, -4:][:, :1], z1, 0.0)
  _, _, coact, *_ = _reference(data.tokens, data.token_offsets, lambda x: f1, lambda x: z1,
                               lambda x: _relu(p["sae2"], f1), None)
  np.testing.assert_array_equal(res.coact, coact)


def test_top_images_sorted():
  v = np.array([[0.1, 3.0], [0.5, 1.0], [0.3, 2.0]])
  idx, val = codes.top_images(v, 2)
  np.testing.assert_array_equal(idx, [[1, 2], [0, 2]])
  np.testing.assert_allclose(val, [[0.5, 0.3], [3.0, 2.0]])


@pytest.mark.parametrize("dominant", [False, True])
def test_batch_topk_codes_fast_path_and_fallback_are_exact(dominant):
  """Candidates per row suffice unless one row holds more of the top entries than it offers."""
  rng = np.random.default_rng(7)
  z = np.abs(rng.normal(size=(6, 40))).astype(np.float32)
  if dominant:
    z[2] += 10.0                      # row 2 owns every one of the top k * rows entries
  valid = np.array([True] * 5 + [False])
  k, cand = 3, 6
  got = np.asarray(subjects.batch_topk_codes(z, k, valid, cand))
  zv = np.where(valid[:, None], z, -1.0)
  keep = np.argsort(-zv, axis=None, kind="stable")[:k * valid.sum()]
  want = np.zeros(z.size, np.float32)
  want[keep] = z.reshape(-1)[keep]
  np.testing.assert_array_equal(got, want.reshape(z.shape))
  assert (got[2] > 0).sum() == (15 if dominant else (got[2] > 0).sum())


def test_batch_topk_codes_overflow_of_a_row_with_values_below_one():
  """A row whose candidates are all kept may own more top entries than it offers, whatever the
  size of its values (mutation gap subjects.batch_topk_codes `vals.min(-1) > 0`): here row 0's
  values lie in (0, 1) and it owns all k * rows = 6 of the top entries, 3 more than its 3
  candidates. Hand answer: row 0's six largest, 0.9 .. 0.4; nothing elsewhere."""
  z = np.full((3, 8), 0.01, np.float32)
  z[0] = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]
  z[1, :3] = [0.05, 0.04, 0.03]
  valid = np.ones(3, bool)
  got = np.asarray(subjects.batch_topk_codes(z, 2, valid, 3))
  want = np.zeros_like(z)
  want[0, :6] = z[0, :6]
  np.testing.assert_array_equal(got, want)
