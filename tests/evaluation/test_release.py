"""Release-faithful evaluation (issue 12, item 4): chunks inside image batches and the top-20
alive rule, against NumPy float64 loops on hand-built ragged images."""
import jax
import ml_collections
import numpy as np
import pytest

from csae_jax.evaluation import codes
from csae_jax.evaluation import experiments
from csae_jax.evaluation import release
from csae_jax.evaluation import subjects
from csae_jax.evaluation.sources import ArraySource
from csae_jax.models import build_model
from tests.evaluation import tiny

D, N1 = 6, 24


def test_image_batch_chunk_bounds_by_hand():
  offsets = np.array([0, 3, 3, 8, 10, 11])          # tokens 3, 0, 5, 2, 1
  # 2 images per batch, chunks of 4: batch [0, 3) -> (0,3); batch [3, 10) -> (3,7), (7,10);
  # batch [10, 11) -> (10, 11)
  assert release.image_batch_chunk_bounds(offsets, 4, 2) == [(0, 3), (3, 7), (7, 10), (10, 11)]
  assert release.chunk_bounds(offsets, 4, None) == [(0, 4), (4, 8), (8, 11)]
  with pytest.raises(ValueError, match="positive"):
    release.image_batch_chunk_bounds(offsets, 4, 0)
  with pytest.raises(ValueError, match="non-decreasing"):
    release.image_batch_chunk_bounds(np.array([0, 5, 3]), 4, 2)


@pytest.fixture(scope="module")
def ragged():
  rng = np.random.default_rng(3)
  lens = np.array([7, 2, 9, 0, 5, 11, 4, 6])
  offsets = np.concatenate([[0], np.cumsum(lens)])
  x = rng.normal(size=(offsets[-1], D)).astype(np.float32)
  return ArraySource(x, offsets, embeddings=rng.normal(size=(len(lens), 3)))


def _batchtopk_subject():
  m = build_model({"name": "batchtopk", "d": D, "options": {"n": N1, "k": 2, "aux_k": None}})
  params, state = m.init(jax.random.PRNGKey(0), np.zeros((4, D), np.float32))
  params = jax.tree_util.tree_map(np.asarray, params)
  params["b_enc"] = (0.3 * np.random.default_rng(1).normal(size=N1)).astype(np.float32)
  return subjects.from_model(m, params, state, encoding="batch"), params


def _reference_codes(params, x, bounds, k):
  z = np.maximum((x.astype(np.float64) - params["b_dec"]) @ params["W_enc"] + params["b_enc"], 0)
  c = np.zeros_like(z)
  for a, b in bounds:
    blk = z[a:b]
    keep = np.argsort(-blk, axis=None, kind="stable")[:k * len(blk)]
    flat = np.zeros(blk.size)
    flat[keep] = blk.reshape(-1)[keep]
    c[a:b] = flat.reshape(blk.shape)
  return z, c


def _image_means(c, o):
  return np.stack([c[o[i]:o[i + 1]].mean(0) if o[i + 1] > o[i] else np.zeros(c.shape[1])
                   for i in range(len(o) - 1)])


def test_release_chunks_match_reference_and_differ_from_global(ragged):
  subj, params = _batchtopk_subject()
  o = ragged.token_offsets
  rel = codes.run_pass(subj, ragged, codes.PassOptions(chunk_tokens=8, images_per_batch=3,
                                                       coactivation=False))
  glob = codes.run_pass(subj, ragged, codes.PassOptions(chunk_tokens=8, coactivation=False))
  # hand-made bounds: batches of 3 images = tokens [0,18), [18,34), [34,44); chunks of 8 inside
  bounds = [(0, 8), (8, 16), (16, 18), (18, 26), (26, 34), (34, 42), (42, 44)]
  assert release.image_batch_chunk_bounds(o, 8, 3) == bounds
  _, c_rel = _reference_codes(params, ragged.tokens, bounds, 2)
  _, c_glob = _reference_codes(params, ragged.tokens, release.global_chunk_bounds(44, 8), 2)
  np.testing.assert_allclose(rel.image_codes, _image_means(c_rel, o), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(glob.image_codes, _image_means(c_glob, o), rtol=1e-5, atol=1e-6)
  assert np.abs(rel.image_codes - glob.image_codes).max() > 1e-3   # the switch matters


def test_release_alive_is_top20_of_dense(ragged):
  subj, params = _batchtopk_subject()
  res = codes.run_pass(subj, ragged, codes.PassOptions(
      chunk_tokens=8, images_per_batch=3, coactivation=False,
      top_alive=release.RELEASE_TOP_ALIVE, act_min=release.RELEASE_ACT_MIN))
  z, _ = _reference_codes(params, ragged.tokens, [(0, 44)], 2)
  alive = np.zeros(N1, bool)
  for t in range(len(z)):
    top = np.argsort(-z[t], kind="stable")[:20]
    alive[[j for j in top if z[t, j] > 0]] = True
  np.testing.assert_array_equal(res.alive, alive)
  spec = codes.run_pass(subj, ragged, codes.PassOptions(chunk_tokens=8, coactivation=False))
  assert res.alive.sum() >= spec.alive.sum()


def test_release_faithful_switch_sets_every_option():
  c = tiny.tiny_experiment_config()
  default = experiments.eval_options(c)
  assert default.images_per_batch is None and default.top_alive == 12
  c.eval.release_faithful = True
  o = experiments.eval_options(c)
  assert (o.chunk_tokens, o.images_per_batch, o.top_alive, o.act_min) == (4096, 16, 20, 0.0)
  e = ml_collections.ConfigDict(dict(chunk_tokens=1, top_alive=1, act_min=1.0))
  release.apply_to_eval_config(e)
  assert (e.release_faithful, e.images_per_batch, e.top_alive) == (True, 16, 20)


def test_heatmap_codes_follow_the_release_chunks(ragged):
  """Token codes recomputed for the dashboard use the same 16-image-batch chunks as the pass:
  each image's token mean equals its image code under the release chunking."""
  from csae_jax.evaluation import unit_stats
  subj, _ = _batchtopk_subject()
  pr = codes.run_pass(subj, ragged, codes.PassOptions(chunk_tokens=8, images_per_batch=3,
                                                      coactivation=False))
  pairs = [(i, u) for i in range(len(ragged.token_offsets) - 1) for u in range(N1)]
  got = unit_stats.token_codes(subj, ragged, pairs, 8, images_per_batch=3)
  assert len(got) == 7 * N1                      # image 3 has no tokens
  for (i, u), t in got.items():
    assert t.mean() == pytest.approx(pr.image_codes[i, u], abs=1e-6)
