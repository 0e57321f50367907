"""K-means re-seeding of a cascade level (docs/hierarchy_quality.md, "Level-2 re-seeding").

A k2 = 1 Level 2 (SPEC 3) is an online spherical k-means of the level-below atoms: each atom is
reconstructed as h_j d_r + b with h_j = d_r . (w_j - b), so its loss is ||x_j||^2 - (d_r . x_j)^2,
x_j = w_j - b. SGD on ~n_live atoms per batch settles in poor local optima (units on two
families, families split over two units, units on stray atoms). Re-seeding runs, at chosen steps,
a batch k-means of the same objective on all level-below atoms and writes its centres into the
level:

  assignment  r_j = argmax_r d_r . x_j   (the encoder's argmax with W_enc = W_dec^T, b_enc = 0)
  update      d_r = normalise(sum_{j: r_j = r} x_j)   (a unit that owns no atom keeps its row)
  score       sum_j max(0, max_r d_r . x_j)^2   (what the tied level explains; higher is better)

from `restarts` greedy k-means++ starts (D^2 sampling on the residual ||x||^2 - max_r
relu(d_r . x)^2, the best of a few candidates per step), `iters` Lloyd iterations each, keeping
the start with the highest score. Then W_dec = centres, W_enc = W_dec^T, b_enc = 0 (SPEC 1's init
convention); b_dec is kept. Pure JAX: it runs inside the
jitted step under lax.cond, with a key derived from the step.

The same k-means++ / Lloyd / restart loop also runs the Euclidean objective (`EUCLIDEAN`: assign
argmin_r ||x_j - c_r||^2, centre = weighted mean of its atoms, cost min_r ||x_j - c_r||^2), which is
what the vq family's Level 2 (csae_jax/families/vq.py) optimises and re-seeds with.

Optional atom weights w_j >= 0 (a 0/1 live mask: dead atoms should take no unit) weight the
sums, the score and the D^2 sampling; an atom of weight 0 still gets an assignment.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

_EPS = 1e-12


def _unit(a):
  return a / (jnp.linalg.norm(a, axis=-1, keepdims=True) + _EPS)


def explained(x, centres):
  """Per atom max(0, max_r d_r . x)^2 and the argmax r: the tied level's fit of each atom."""
  proj = x @ centres.T
  return jnp.maximum(proj.max(-1), 0.0) ** 2, jnp.argmax(proj, axis=-1)


def sq_dists(x, centres):
  """(n_atoms, n_units) ||x_j - c_r||^2, clipped at 0 (computed as ||x||^2 - 2 x.c + ||c||^2)."""
  d2 = (jnp.sum(x * x, -1)[:, None] - 2.0 * x @ centres.T + jnp.sum(centres * centres, -1)[None])
  return jnp.maximum(d2, 0.0)


class Objective(NamedTuple):
  """One k-means geometry: what an atom costs, how a seed atom and a group of atoms give a centre.

  cost(x, centres)          -> (per-atom cost >= 0, assignment): the D^2 weights of k-means++ and
                               the Lloyd assignment
  seed(atom)                -> the centre k-means++ places on a sampled atom
  update(sums, weights)     -> the centres of owned units (weighted sums and total weights)
  score(x, centres, w)      -> the restart criterion, higher is better
  """
  cost: Callable
  seed: Callable
  update: Callable
  score: Callable


def _spherical_cost(x, centres):
  best, assign = explained(x, centres)
  return jnp.maximum(jnp.sum(x * x, -1) - best, 0.0), assign


def _euclidean_cost(x, centres):
  d2 = sq_dists(x, centres)
  return d2.min(-1), jnp.argmin(d2, axis=-1)


SPHERICAL = Objective(
    cost=_spherical_cost, seed=_unit, update=lambda sums, _: _unit(sums),
    score=lambda x, c, w: jnp.sum(w * explained(x, c)[0]))
EUCLIDEAN = Objective(
    cost=_euclidean_cost, seed=lambda a: a,
    update=lambda sums, wsum: sums / jnp.maximum(wsum, _EPS)[:, None],
    score=lambda x, c, w: -jnp.sum(w * _euclidean_cost(x, c)[0]))


def _weights(x, w):
  return jnp.ones(x.shape[0], x.dtype) if w is None else jnp.asarray(w, x.dtype)


def _log(a):
  return jnp.where(a > 0, jnp.log(jnp.maximum(a, _EPS)), -jnp.inf)


def default_trials(n_units: int) -> int:
  """Candidates per greedy k-means++ step: 2 + floor(ln n_units) (Arthur & Vassilvitskii's
  suggestion, also scikit-learn's default)."""
  return 2 + int(math.log(max(n_units, 1)))


def plus_plus_init(key, x, n_units: int, w=None, objective: Objective = SPHERICAL,
                   trials: int | None = None):
  """Greedy k-means++ (D^2) seeding of n_units centres among the rows of x (n, d): unit
  directions for SPHERICAL, the atoms themselves for EUCLIDEAN. Each step draws `trials`
  candidates by D^2 sampling and keeps the one that lowers the total weighted cost most
  (trials = 1: plain k-means++; None: default_trials). Plain k-means++ left the vq re-seed's
  best-of-128 fits above scikit-learn's best-of-20 SSE (docs/hierarchy_quality.md, "vq gap")."""
  w = _weights(x, w)
  trials = default_trials(n_units) if trials is None else int(trials)
  if trials < 1:
    raise ValueError(f"trials must be >= 1, got {trials}")
  k0, key = jax.random.split(key)
  first = objective.seed(x[jax.random.categorical(k0, _log(w))])
  centres = jnp.zeros((n_units, x.shape[1]), x.dtype).at[0].set(first)
  best = objective.cost(x, first[None])[0]

  def body(i, carry):
    centres, best, key = carry
    key, sub = jax.random.split(key)
    resid = w * best
    logits = jnp.where(jnp.all(resid <= 0), _log(w), _log(resid))
    cand = jax.vmap(objective.seed)(x[jax.random.categorical(sub, logits, shape=(trials,))])
    new_best = jax.vmap(lambda c: jnp.minimum(best, objective.cost(x, c[None])[0]))(cand)
    pick = jnp.argmin(jnp.sum(w[None] * new_best, -1))
    return centres.at[i].set(cand[pick]), new_best[pick], key

  centres, _, _ = lax.fori_loop(1, n_units, body, (centres, best, key))
  return centres


def lloyd(x, centres, iters: int, w=None, objective: Objective = SPHERICAL):
  """iters Lloyd iterations of `objective` (default: the spherical k-means above); a unit that owns
  no atom (of positive weight) keeps its centre."""
  n_units = centres.shape[0]
  w = _weights(x, w)

  def body(_, c):
    _, assign = objective.cost(x, c)
    sums = jnp.zeros_like(c).at[assign].add(w[:, None] * x)
    wsum = jnp.zeros((n_units,), x.dtype).at[assign].add(w)
    return jnp.where((wsum > 0)[:, None], objective.update(sums, wsum), c)

  return lax.fori_loop(0, iters, body, centres)


def fit(key, x, n_units: int, restarts: int, iters: int, w=None,
        objective: Objective = SPHERICAL, trials: int | None = None):
  """(centres (n_units, d), score) of the best of `restarts` greedy k-means++ + Lloyd runs on x."""
  w = _weights(x, w)

  def one(k):
    c = lloyd(x, plus_plus_init(k, x, n_units, w, objective, trials), iters, w, objective)
    return c, objective.score(x, c, w)

  cs, scores = jax.vmap(one)(jax.random.split(key, restarts))
  i = jnp.argmax(scores)
  return cs[i], scores[i]


def reseed(key, params, atoms, restarts: int, iters: int, w=None):
  """The level's params with W_dec = k-means centres of atoms - b_dec, W_enc = W_dec^T, b_enc 0."""
  x = atoms - params["b_dec"]
  centres, _ = fit(key, x, params["W_dec"].shape[0], restarts, iters, w)
  p = dict(params)
  p["W_dec"] = centres.astype(params["W_dec"].dtype)
  p["W_enc"] = centres.T.astype(params["W_enc"].dtype)
  p["b_enc"] = jnp.zeros_like(params["b_enc"])
  return p
