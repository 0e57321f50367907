"""Statistics of the real-model steering check (issue 12, item 6): measures, norm matching,
permutation p-values and hierarchical bootstrap CIs. Pure NumPy (float64).

A clamp in error-preserving mode adds delta = (c - post[:, R]) W_dec[R] to every token (SPEC 5).
For a control set R the clamp value c_R is chosen so that the root-mean-square perturbation norm
over the measured tokens equals the cluster's: with u = sum_{r in R} w_r and P = post[:, R] W_dec[R],
E_t ||c u - P_t||^2 = c^2 ||u||^2 - 2 c E_t(u . P_t) + E_t ||P_t||^2 is a quadratic in c.
"""
from __future__ import annotations

import numpy as np


def log_odds(logits: np.ndarray, cls: int) -> np.ndarray:
  """log p_cls - log(1 - p_cls) per row, computed stably from logits [N, classes]."""
  z = np.asarray(logits, np.float64)
  target = z[:, cls]
  rest = np.delete(z, cls, axis=1)
  m = rest.max(1)
  return target - (m + np.log(np.exp(rest - m[:, None]).sum(1)))


def off_target_kl(base_logits: np.ndarray, steered_logits: np.ndarray, cls: int) -> np.ndarray:
  """Non-specific damage per image: KL(base || steered) of the distributions renormalised over
  every class except the target."""
  def logp(z):
    z = np.delete(np.asarray(z, np.float64), cls, axis=1)
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))
  lp, lq = logp(base_logits), logp(steered_logits)
  return np.sum(np.exp(lp) * (lp - lq), 1)


def clamp_delta(post_r: np.ndarray, w_r: np.ndarray, c: float) -> np.ndarray:
  """delta [T, d] = (c - post[:, R]) W_dec[R] for post_r [T, |R|] and w_r [|R|, d]."""
  return (c - np.asarray(post_r, np.float64)) @ np.asarray(w_r, np.float64)


def rms_norm(delta: np.ndarray) -> float:
  return float(np.sqrt(np.mean(np.sum(np.square(delta), -1))))


def matched_clamp(post_r: np.ndarray, w_r: np.ndarray, target_rms: float,
                  sign: float) -> tuple[float, bool]:
  """(c, matched): the clamp value whose RMS perturbation norm equals target_rms; among the two
  roots the one with the sign of `sign` (0: the smaller |c|). When no c reaches the target (the
  norm's minimum exceeds it) returns the minimiser and matched=False."""
  w = np.asarray(w_r, np.float64)
  p = np.asarray(post_r, np.float64) @ w
  u = w.sum(0)
  a = float(u @ u)
  b = -2.0 * float(np.mean(p @ u))
  e = float(np.mean(np.sum(p * p, -1))) - float(target_rms) ** 2
  if a <= 0:
    return 0.0, False
  disc = b * b - 4 * a * e
  if disc < 0:
    return -b / (2 * a), False
  roots = ((-b - np.sqrt(disc)) / (2 * a), (-b + np.sqrt(disc)) / (2 * a))
  if sign > 0:
    return float(max(roots)), True
  if sign < 0:
    return float(min(roots)), True
  return float(min(roots, key=abs)), True


def matched_clamps(post_r: np.ndarray, w_r: np.ndarray, target_rms: float, sign: float):
  """matched_clamp for many control sets at once, float32.

  post_r [T, S, m] (dense activations of each set's m atoms), w_r [S, m, d]. Returns
  (c [S], matched [S] bool, delta [S, T, d]) with delta = c u - P (u = sum of the set's atoms)."""
  w = np.asarray(w_r, np.float32)
  p = np.einsum("tsm,smd->std", np.asarray(post_r, np.float32), w)
  u = w.sum(1)                                                    # S, d
  a = np.einsum("sd,sd->s", u, u).astype(np.float64)
  b = -2.0 * np.einsum("std,sd->s", p, u).astype(np.float64) / p.shape[1]
  e = np.einsum("std,std->s", p, p).astype(np.float64) / p.shape[1] - float(target_rms) ** 2
  disc = b * b - 4 * a * e
  ok = (disc >= 0) & (a > 0)
  root = np.sqrt(np.maximum(disc, 0))
  safe_a = np.where(a > 0, a, 1.0)
  lo, hi = (-b - root) / (2 * safe_a), (-b + root) / (2 * safe_a)
  if sign > 0:
    c = hi
  elif sign < 0:
    c = lo
  else:
    c = np.where(np.abs(lo) <= np.abs(hi), lo, hi)
  c = np.where(ok, c, np.where(a > 0, -b / (2 * safe_a), 0.0))
  delta = c.astype(np.float32)[:, None, None] * u[:, None, :] - p
  return c, ok, delta


def permutation_p(cluster_effect: float, control_effects, greater: bool = True) -> float:
  """(1 + #controls at least as extreme) / (1 + #controls), one-sided."""
  ctrl = np.asarray(control_effects, np.float64)
  hits = np.sum(ctrl >= cluster_effect) if greater else np.sum(ctrl <= cluster_effect)
  return float((1 + hits) / (1 + ctrl.size))


def hierarchical_bootstrap(groups, n_boot: int = 2000, seed: int = 0,
                           alpha: float = 0.05) -> dict:
  """Mean of paired per-image differences and its percentile CI, resampling seeds, then clusters
  within a seed, then images within a cluster (each with replacement).

  groups: {seed: [per-cluster 1-D arrays of per-image differences]} (empty arrays are dropped).
  """
  data = [[np.asarray(c, np.float64) for c in cl if len(c)] for cl in groups.values()]
  data = [cl for cl in data if cl]
  if not data:
    return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n_boot": 0}
  point = float(np.mean([np.mean([c.mean() for c in cl]) for cl in data]))
  rng = np.random.default_rng(seed)
  stats = np.empty(n_boot)
  for b in range(n_boot):   # a loop over bootstrap draws; each draw is small array work
    seeds = rng.integers(0, len(data), len(data))
    per_seed = []
    for s in seeds:
      cl = data[s]
      picks = rng.integers(0, len(cl), len(cl))
      per_seed.append(np.mean([cl[k][rng.integers(0, len(cl[k]), len(cl[k]))].mean()
                               for k in picks]))
    stats[b] = np.mean(per_seed)
  lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
  return {"mean": point, "lo": float(lo), "hi": float(hi), "n_boot": int(n_boot)}


def specific(ci: dict, direction: float) -> bool:
  """The verdict the check asserts: the whole CI on the expected side of 0 (never a sign)."""
  return bool(ci["lo"] > 0) if direction > 0 else bool(ci["hi"] < 0)
