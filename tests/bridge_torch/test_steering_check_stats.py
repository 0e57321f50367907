"""Statistics of the real-model steering check (issue 12, item 6) against hand values and
NumPy float64 references."""
from __future__ import annotations

import numpy as np
import pytest

from bridge_torch import steering_stats as st


def test_log_odds_and_off_target_kl_by_hand():
  logits = np.array([[np.log(3.0), 0.0, 0.0]])        # p = (.6, .2, .2)
  assert st.log_odds(logits, 0)[0] == pytest.approx(np.log(0.6 / 0.4), rel=1e-12)
  # raising only the target leaves the off-target distribution unchanged: damage 0
  assert st.off_target_kl(logits, logits + np.array([[5.0, 0, 0]]), 0)[0] == pytest.approx(0)
  q = np.array([[0.0, np.log(3.0), 0.0]])              # off-target (1/2, 1/2) -> (3/4, 1/4)
  want = 0.5 * np.log(0.5 / 0.75) + 0.5 * np.log(0.5 / 0.25)
  assert st.off_target_kl(logits, q, 0)[0] == pytest.approx(want, rel=1e-12)


def test_matched_clamp_reaches_the_target_norm():
  rng = np.random.default_rng(0)
  post = np.abs(rng.normal(size=(30, 3)))
  w = rng.normal(size=(3, 8))
  for sign in (1.0, -1.0, 0.0):
    c, ok = st.matched_clamp(post, w, 7.0, sign)
    assert ok and st.rms_norm(st.clamp_delta(post, w, c)) == pytest.approx(7.0, rel=1e-9)
    assert sign == 0 or np.sign(c) == sign
  c, ok = st.matched_clamp(post, w, 1e-6, 1.0)          # below the minimum norm: not matched
  assert not ok
  # the vectorised form agrees with the scalar one, set by set
  posts = np.abs(rng.normal(size=(30, 4, 3)))
  ws = rng.normal(size=(4, 3, 8))
  cs, oks, deltas = st.matched_clamps(posts, ws, 5.0, 1.0)
  for s in range(4):
    c, ok = st.matched_clamp(posts[:, s], ws[s], 5.0, 1.0)
    assert ok == oks[s] and cs[s] == pytest.approx(c, rel=1e-4)
    np.testing.assert_allclose(deltas[s], st.clamp_delta(posts[:, s], ws[s], c), rtol=1e-3,
                               atol=1e-4)


def test_permutation_p_by_hand():
  assert st.permutation_p(3.0, [1, 2, 3, 4]) == pytest.approx(3 / 5)
  assert st.permutation_p(5.0, [1, 2, 3, 4]) == pytest.approx(1 / 5)
  assert st.permutation_p(-5.0, [1, 2, 3, 4], greater=False) == pytest.approx(1 / 5)


def test_hierarchical_bootstrap_and_verdict():
  rng = np.random.default_rng(1)
  shifted = {s: [rng.normal(1.0, 0.5, 20) for _ in range(6)] for s in range(3)}
  ci = st.hierarchical_bootstrap(shifted, 500)
  want = np.mean([np.mean([c.mean() for c in v]) for v in shifted.values()])
  assert ci["mean"] == pytest.approx(want) and ci["lo"] < want < ci["hi"]
  assert st.specific(ci, +1.0) and not st.specific(ci, -1.0)
  null = {s: [rng.normal(0.0, 0.5, 20) for _ in range(6)] for s in range(3)}
  ci0 = st.hierarchical_bootstrap(null, 500)
  assert ci0["lo"] < 0 < ci0["hi"] and not st.specific(ci0, 1.0)
  assert np.isnan(st.hierarchical_bootstrap({0: [np.array([])]})["mean"])
