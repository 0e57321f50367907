"""Where a jointly trained Level 2 loses parent ARI (docs/hierarchy_quality.md, "vq gap").

  python -m bench.level2_offline hard 10 4000 '{"l2.family": "vq", "l2.aux_k": null,
      "l2.threshold_start": null}'

Trains CSAE full exactly as bench/level2_pilot.py does (same config, data and overrides), then
scores, on the SAME trained Level-1 atoms, several parent rules against the truth:
  own           the model's Level-2 parents (SPEC 4 argmax), the benchmark's CSAE figure;
  own_nearest   nearest Level-2 centre (vq: b_dec + W_dec[r]; other families: decoder cosine);
  lloyd_own     Euclidean Lloyd (sklearn KMeans, n_init 1) started from the model's own centres,
                on the evaluation-live atoms: is the model at a Lloyd fixed point?
  km20_live / km20_all   sklearn KMeans(n2, n_init 20) on live / all atoms;
  ward_live     Ward HAC on live atoms (the benchmark's HAC rule on these atoms);
  lkRxI_live    csae_jax.level_kmeans.fit (EUCLIDEAN, the vq re-seed) with R restarts, I Lloyd
                iterations on the live atoms.
"live" = fired on the evaluation tokens (the scorer's own mask). Also prints the within-cluster
sum of squares (SSE) of each rule on the live atoms, so a better parent ARI can be compared with
a better k-means objective. One JSON line per rule.
"""
from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from bench import level2_pilot
from csae_jax import level_kmeans
from csae_jax.benchmarks import scoring
from csae_jax.benchmarks import suite
from csae_jax.evaluation import codes as codes_lib
from csae_jax.evaluation import subjects as subjects_lib


def _sse(x, labels):
  tot = 0.0
  for g in np.unique(labels[labels >= 0]):
    pts = x[labels == g]
    tot += float(np.sum((pts - pts.mean(0)) ** 2))
  return tot


def main(argv):
  from sklearn import cluster as skc
  regime, seed, steps = argv[1], int(argv[2]), int(argv[3])
  over = json.loads(argv[4]) if len(argv) > 4 else {}
  c = level2_pilot.config(steps, over)
  tr, te, truth = level2_pilot.dataset(regime, seed)
  runs = suite.train_runs(c, ["csae_full"], tr, seed, log=lambda m: None)
  model, params, state, _ = runs["csae_full"]
  subject = subjects_lib.from_model(model, params, state)
  res = codes_lib.run_pass(subject, te, codes_lib.PassOptions(chunk_tokens=4096))
  atoms = np.asarray(subject.atoms1, np.float64)
  fired = np.asarray(res.fired, bool)
  n2 = int(c.n2)
  p2 = {k: np.asarray(v, np.float64) for k, v in params[1].items()}
  vq = model.cfg.levels[1].family == "vq"
  if vq:
    centres = p2["b_dec"] + p2["W_dec"]
    dist = ((atoms[:, None, :] - centres[None]) ** 2).sum(-1)
    nearest = dist.argmin(1)
  else:
    w = p2["W_dec"] / np.linalg.norm(p2["W_dec"], axis=1, keepdims=True)
    centres = p2["b_dec"] + w
    nearest = ((atoms - p2["b_dec"]) @ w.T).argmax(1)
  live = np.flatnonzero(fired)
  x = atoms[live]

  def on_live(labels_live):
    out = np.full(len(atoms), -1, np.int64)
    out[live] = labels_live
    return out

  rules = {"own": subject.param_parent_maps[0], "own_nearest": nearest}
  rules["lloyd_own"] = on_live(skc.KMeans(n2, init=centres, n_init=1, max_iter=300)
                               .fit_predict(x))
  rules["km20_live"] = on_live(skc.KMeans(n2, n_init=20, random_state=0).fit_predict(x))
  rules["km20_all"] = skc.KMeans(n2, n_init=20, random_state=0).fit_predict(atoms)
  rules["ward_live"] = on_live(skc.AgglomerativeClustering(n2, linkage="ward").fit_predict(x))
  for restarts, iters in ((8, 20), (32, 50), (128, 50)):   # the in-training re-seed's k-means
    cen, _ = level_kmeans.fit(jax.random.PRNGKey(seed), jnp.asarray(x, jnp.float32), n2,
                              restarts, iters, None, level_kmeans.EUCLIDEAN)
    dist = ((x[:, None, :] - np.asarray(cen, np.float64)[None]) ** 2).sum(-1)
    rules[f"lk{restarts}x{iters}_live"] = on_live(dist.argmin(1))
  for name, pm in rules.items():
    pm = np.asarray(pm, np.int64)
    s = scoring.score(atoms, pm, truth, fired=fired, match_cos=c.match_cos)
    print(json.dumps(dict(regime=regime, seed=seed, steps=steps, over=over, rule=name,
                          children=round(s["children_recovered"], 3),
                          ari=round(s["parent_ari"], 3), acc=round(s["parent_accuracy"], 3),
                          live=int(fired.sum()), sse_live=round(_sse(x, pm[live]), 3))),
          flush=True)


if __name__ == "__main__":
  main(sys.argv)
