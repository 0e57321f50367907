"""The steering hook's exact outputs and the experiment's clamp values (SPEC 5) against NumPy float64.

The hook tests on tiny MLLMs check orderings; these pin the numbers: the clamp SETS the code of
every atom in A to c (reconstruction mode), error-preserving adds (c - post_A) W_dec[A], and the
experiment clamps at exactly +/- scale_mult * sigma_A.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bridge_torch import experiment, steering
from bridge_torch import sae as tsae
from bridge_torch.judges import Concept, Judge

D, N = 6, 16


def _params(seed=0):
  rng = np.random.default_rng(seed)
  w_dec = rng.normal(size=(N, D))
  w_dec /= np.linalg.norm(w_dec, axis=1, keepdims=True)
  return {"W_enc": w_dec.T + 0.3 * rng.normal(size=(D, N)), "b_enc": 0.5 + 0.1 * rng.normal(size=N),
          "W_dec": w_dec, "b_dec": 0.2 * rng.normal(size=D)}


def _sae(p):
  return tsae.TorchSAE("relu", {"d": D, "n": N}, {k: v.astype(np.float32) for k, v in p.items()})


def _p32(p):
  return {k: v.astype(np.float32).astype(np.float64) for k, v in p.items()}


def _reference(p, x, atoms, c, mode):
  """NumPy float64 transcription of SPEC 5's hook."""
  post = np.maximum((x - p["b_dec"]) @ p["W_enc"] + p["b_enc"], 0.0)
  if mode == "error_preserving":
    return x + (c - post[:, atoms]) @ p["W_dec"][atoms]
  post = post.copy()
  post[:, atoms] = c
  return post @ p["W_dec"] + p["b_dec"]


@pytest.mark.parametrize("mode", steering.MODES)
@pytest.mark.parametrize("c", [0.0, 2.5, -1.5])
def test_hooked_module_output_equals_numpy(mode, c):
  p = _params(1)
  sae = _sae(p)
  atoms = [1, 4, 7]
  x = np.random.default_rng(2).normal(size=(2, 5, D)).astype(np.float32) * 2
  post = np.maximum((x.reshape(-1, D) - p["b_dec"]) @ p["W_enc"] + p["b_enc"], 0)
  assert (post[:, atoms] > 0.1).mean() > 0.5      # the clamped atoms are active: set != add
  net = torch.nn.Sequential(torch.nn.Identity())
  hook = steering.SteeringHook(sae, mode=mode).attach(net, "0")
  try:
    hook.set_clamp(atoms, c)
    with torch.no_grad():
      got = net(torch.as_tensor(x)).numpy()
  finally:
    hook.detach()
  want = _reference(_p32(p), x.reshape(-1, D).astype(np.float64), atoms, c, mode).reshape(x.shape)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_channel_axis_one_matches_numpy():
  """NCHW outputs: d on axis 1; the hook steers each spatial position's channel vector."""
  p = _params(3)
  sae = _sae(p)
  x = np.random.default_rng(4).normal(size=(2, D, 3, 2)).astype(np.float32)
  hook = steering.SteeringHook(sae, channel_axis=1)
  hook.set_clamp([0, 9], 3.0)
  got = hook.steer(torch.as_tensor(x)).numpy()
  flat = np.moveaxis(x, 1, -1).reshape(-1, D).astype(np.float64)
  want = np.moveaxis(_reference(_p32(p), flat, [0, 9], 3.0, "reconstruction").reshape(2, 3, 2, D),
                     -1, 1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


class _RecordingJudge(Judge):
  """Yes to every baseline caption (so suppression runs on all images) and to positive clamps."""

  def judge(self, captions, concept, images=None):
    return [c == "none" or float(c.split()[1]) > 0 for c in captions]


def test_experiment_clamps_at_scale_mult_times_sigma():
  sae = _sae(_params(0))
  hook = steering.SteeringHook(sae)
  caption = lambda img: ("none" if hook.clamp is None else
                         f"{','.join(map(str, hook.clamp.atoms))} {hook.clamp.value!r}")
  arms = steering.Arms(cluster=(2, 5), best_child=(5,), rand1=(8,))
  plans = [experiment.ClusterPlan(7, arms, 0.37, None, Concept.from_label("red"), np.arange(2)),
           experiment.ClusterPlan(3, arms, 1.9, None, Concept.from_label("dog"), np.arange(2))]
  cfg = experiment.SteerConfig(insert_images=3, scale_mult=3.0, seed=0)
  images = list(range(4))
  _, per_cluster, captions = experiment.run_experiment(
      plans, caption, images, [f"i{i}" for i in images], hook, _RecordingJudge(), cfg)
  seen = {}
  for unit, _, arm, direction, _, cap, _ in captions:
    if arm != "baseline":
      atoms, value = cap.split()
      seen.setdefault((unit, arm, direction), set()).add((atoms, float(value)))
  sigma = {7: 0.37, 3: 1.9}
  want_atoms = {"cluster": "2,5", "best_child": "5", "rand1": "8"}
  # every caption ran with +3 sigma_A (insertion) or -3 sigma_A (suppression) on the arm's atoms
  for unit in (7, 3):
    for arm in ("cluster", "best_child", "rand1"):
      assert seen[(unit, arm, "insert")] == {(want_atoms[arm], 3.0 * sigma[unit])}
      assert seen[(unit, arm, "suppress")] == {(want_atoms[arm], -3.0 * sigma[unit])}
  assert hook.clamp is None
  assert {r["sigma"] for r in per_cluster if r["unit"] == 7} == {0.37}


def test_alive_means_in_some_tokens_dense_top_12():
  """One token with every unit active: exactly its 12 largest dense units are alive (SPEC 5)."""
  p = _params(5)
  p["b_enc"] = p["b_enc"] + 5.0                  # every unit's dense activation > 1e-3
  sae = _sae(p)
  x = np.random.default_rng(6).normal(size=(1, D)).astype(np.float32)
  dense = np.maximum((x - p["b_dec"]) @ p["W_enc"] + p["b_enc"], 0)[0]
  assert (dense > 1e-3).all()
  _, alive = steering.image_codes(sae, lambda a, b: x[a:b], np.array([0, 1]))
  np.testing.assert_array_equal(np.flatnonzero(alive), np.sort(np.argsort(-dense)[:12]))


def test_defaults_top_10_images_and_no_cluster_of_orphans():
  """concept_scale's default is the paper's top-10 images; atoms without a parent (-1) never form
  a cluster, however many of them are alive."""
  v = np.zeros((12, 3), np.float32)
  v[:, 1] = 2.0 + np.arange(12)                 # image 11 ranks first; 0 and 1 are outside
  want = float(np.mean(2.0 + np.arange(2, 12)))
  assert steering.concept_scale(v, [1], 0.0) == pytest.approx(want, rel=1e-6)
  parents = torch.tensor([-1, -1, -1, 0, 0])
  ex = tsae.TorchExport({}, [], [parents])
  got = steering.clusters(ex, np.ones(5, bool))
  assert {k: w.tolist() for k, w in got.items()} == {0: [3, 4]}
