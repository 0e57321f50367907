"""evaluate() end to end against an independent float64 pipeline written with loops."""
import itertools

import jax
import numpy as np
import pytest

from csae_jax import cascade as cascade_lib
from csae_jax.evaluation import evaluator
from csae_jax.evaluation import subjects
from csae_jax.evaluation.sources import ArraySource
from csae_jax.models import build_model

D = 5


def _relu(p, x):
  return np.maximum((x - p["b_dec"]) @ p["W_enc"] + p["b_enc"], 0.0)


def _init(model, seed):
  rng = np.random.default_rng(seed)
  p, s = model.init(jax.random.PRNGKey(seed), rng.normal(size=(8, D)).astype(np.float32))
  p = jax.tree_util.tree_map(np.asarray, p)
  return p, s


@pytest.fixture(scope="module")
def source():
  rng = np.random.default_rng(3)
  lens = rng.integers(1, 9, size=12)
  offsets = np.concatenate([[0], np.cumsum(lens)])
  return ArraySource(rng.normal(size=(offsets[-1], D)) + 0.5, offsets,
                     embeddings=rng.normal(size=(12, 4)))


def _reference_hms(v, emb, parent, n2, keep):
  r = []
  for j in range(v.shape[1]):
    col = v[:, j]
    span = col.max() - col.min()
    a = np.ones(len(col)) if span <= 1e-8 else (col - col.min()) / span
    rj = (a[:, None] * emb).sum(0) / (a.sum() + 1e-8)
    r.append(rj / np.linalg.norm(rj))
  out = np.full(n2, np.nan)
  for p in range(n2):
    kids = [j for j in range(len(parent)) if parent[j] == p and keep[j]]
    if len(kids) >= 2:
      out[p] = np.mean([r[u] @ r[w] for u, w in itertools.combinations(kids, 2)])
  return out


def test_flat_pair_matches_float64_pipeline(source):
  m1 = build_model({"name": "relu", "d": D, "options": {"n": 10}})
  m2 = build_model({"name": "relu", "d": D, "options": {"n": 3}})
  p1, s1 = _init(m1, 1)
  p2, s2 = _init(m2, 2)
  subj = subjects.from_model(m1, p1, s1, model2=m2, params2=p2, state2=s2)
  ev = evaluator.evaluate(subj, source, evaluator.Options(chunk_tokens=7))
  x = source.tokens.astype(np.float64)
  c1, c2 = _relu(p1, x), _relu(p2, x)
  o = source.token_offsets
  v = np.stack([c1[o[i]:o[i + 1]].mean(0) for i in range(12)])
  counts = np.zeros((10, 3))
  alive = np.zeros(10, bool)
  for t in range(len(x)):
    top = [j for j in np.argsort(-c1[t])[:12] if c1[t, j] > 1e-3]
    alive[top] = True
    if c2[t].max() > 1e-3:
      counts[top, np.argmax(c2[t])] += 1
  parent = np.array([np.argmax(r) if r.max() > 0 else -1 for r in counts])
  want = _reference_hms(v, source.embeddings().astype(np.float64), parent, 3, alive)
  np.testing.assert_array_equal(ev.alive, alive)
  np.testing.assert_array_equal(ev.parents[0], np.where(alive, parent, -1))
  np.testing.assert_allclose(ev.hms[0], want, atol=1e-5)
  fin = want[np.isfinite(want)]
  assert ev.summary["hms"]["count"] == fin.size
  if fin.size:
    assert ev.summary["hms"]["mean"] == pytest.approx(fin.mean(), abs=1e-5)


def test_cascade_parents_from_level2_encoder_and_level_metrics(source):
  m = build_model({"name": "cascade", "d": D, "levels": [
      {"family": "relu", "n": 12}, {"family": "relu", "n": 4}]})
  p, s = _init(m, 4)
  subj = subjects.from_model(m, p, s)
  w1 = p[0]["W_dec"].astype(np.float64)
  h = _relu(p[1], w1)
  want = np.where(h.max(1) > 1e-3, h.argmax(1), -1)
  np.testing.assert_array_equal(subj.param_parent_maps[0], want)
  np.testing.assert_array_equal(subj.param_parent_maps[0],
                                np.asarray(cascade_lib.parent_maps(p, m.cfg)[0]))
  lvl = subj.extra["level_recon"][0]
  xhat = h @ p[1]["W_dec"] + p[1]["b_dec"]
  fvu = ((w1 - xhat) ** 2).sum() / ((w1 - w1.mean(0)) ** 2).sum()
  assert lvl["fvu"] == pytest.approx(fvu, rel=1e-4)
  assert lvl["dead_fraction"] == pytest.approx(1 - (h > 0).any(0).mean())
  ev = evaluator.evaluate(subj, source, evaluator.Options(children="all"))
  x = source.tokens.astype(np.float64)
  c1 = _relu(p[0], x)
  o = source.token_offsets
  v = np.stack([c1[o[i]:o[i + 1]].mean(0) for i in range(12)])
  ref = _reference_hms(v, source.embeddings().astype(np.float64), want, 4, np.ones(12, bool))
  np.testing.assert_allclose(ev.hms[0], ref, atol=1e-5)
  assert ev.summary["level_recon"][0]["level"] == 2


def test_posthoc_and_coded_children(source):
  m = build_model({"name": "batchtopk", "d": D, "options": {"n": 12, "k": 1, "aux_k": None}})
  p, s = _init(m, 5)
  subj = subjects.from_model(m, p, s)
  ev = evaluator.evaluate(subj, source, evaluator.Options(posthoc="hac", posthoc_clusters=3))
  assert ev.level_sizes == [3]
  kept = ev.parents[0] >= 0
  np.testing.assert_array_equal(kept, ev.alive)
  coded = evaluator.evaluate(subj, source, evaluator.Options(posthoc="hac", posthoc_clusters=3,
                                                             children="coded"))
  assert (coded.parents[0] >= 0).sum() <= kept.sum()
  never_coded = ev.top_values[:, 0] <= 0            # constant-zero image codes
  assert not np.any((coded.parents[0] >= 0) & never_coded)


def test_save_load_round_trip(tmp_path, source):
  m = build_model({"name": "relu", "d": D, "options": {"n": 6}})
  p, s = _init(m, 6)
  ev = evaluator.evaluate(subjects.from_model(m, p, s), source,
                          evaluator.Options(posthoc="spectral", posthoc_clusters=2,
                                            spectral_neighbors=3))
  ev.save(str(tmp_path / "r"))
  back = evaluator.Evaluation.load(str(tmp_path / "r"))
  np.testing.assert_array_equal(back.parents[0], ev.parents[0])
  np.testing.assert_array_equal(back.hms[0], ev.hms[0])
  np.testing.assert_array_equal(back.top_images, ev.top_images)
  assert back.summary["hms"]["count"] == ev.summary["hms"]["count"]


def test_three_level_cascade_hms_at_every_level(source):
  m = build_model({"name": "cascade", "d": D, "levels": [
      {"family": "relu", "n": 12}, {"family": "relu", "n": 5}, {"family": "relu", "n": 2}]})
  p, s = _init(m, 8)
  subj = subjects.from_model(m, p, s)
  ev = evaluator.evaluate(subj, source, evaluator.Options(children="all"))
  assert ev.level_sizes == [5, 2] and set(ev.summary["levels"]) == {"level2", "level3"}
  pi2, pi3 = (np.asarray(x) for x in cascade_lib.parent_maps(p, m.cfg))
  r1 = ev.prototypes.astype(np.float64)
  r1 /= np.linalg.norm(r1, axis=1, keepdims=True)
  r2 = {u: r1[pi2 == u].mean(0) for u in range(5) if (pi2 == u).any()}
  for top in range(2):
    kids = [u for u in r2 if pi3[u] == top]
    if len(kids) >= 2:
      cos = [r2[a] @ r2[b] / np.linalg.norm(r2[a]) / np.linalg.norm(r2[b])
             for a, b in itertools.combinations(kids, 2)]
      assert ev.hms[1][top] == pytest.approx(np.mean(cos), abs=1e-6)
    else:
      assert np.isnan(ev.hms[1][top])
  assert ev.child_counts[1].sum() == len([u for u in r2 if pi3[u] >= 0])
  assert np.isfinite(ev.hms[1]).any()      # this seed has a level-3 unit with two children
