"""Per-level Adam (csae_jax/optim.py) against a NumPy transcription of the release's update:
projection, global clip 1.0, torch-style Adam with a step count per parameter that starts at the
first step the parameter has a gradient (Level 2: its start step S), lr, unit-norm decoders."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from csae_jax import models
from csae_jax import step as step_lib

D, S = 6, 2


def build(per_level_adam=True):
  return models.build_model(dict(
      name="cascade", d=D,
      levels=[dict(family="batchtopk", n=16, k=2, aux_k=None),
              dict(family="batchtopk", n=5, k=1, aux_k=None)],
      cascade=dict(level_start_steps=[S], k_anneal_frac=0.0, per_level_adam=per_level_adam)))


class ReleaseAdam:
  """torch.optim.Adam semantics in float64: state (step, m, v) created at a parameter's first grad."""

  def __init__(self, b1=0.9, b2=0.999, eps=1e-8):
    self.b1, self.b2, self.eps, self.state = b1, b2, eps, {}

  def step(self, params, grads, lr):
    out = {}
    for name, p in params.items():
      g = grads.get(name)
      if g is None:
        out[name] = p
        continue
      t, m, v = self.state.get(name, (0, np.zeros_like(p), np.zeros_like(p)))
      t, m, v = t + 1, self.b1 * m + (1 - self.b1) * g, self.b2 * v + (1 - self.b2) * g * g
      self.state[name] = (t, m, v)
      denom = np.sqrt(v) / np.sqrt(1 - self.b2 ** t) + self.eps
      out[name] = p - lr * (m / (1 - self.b1 ** t)) / denom
    return out


def release_update(opt, params, grads, lr):
  grads = dict(grads)
  for name, g in grads.items():
    if name.endswith("W_dec"):
      w = params[name]
      grads[name] = g - np.sum(g * w, -1, keepdims=True) * w
  norm = np.sqrt(sum(np.sum(g * g) for g in grads.values()))
  grads = {k: g * min(1.0, 1.0 / norm) for k, g in grads.items()}
  new = opt.step(params, grads, lr)
  for name in new:
    if name.endswith("W_dec"):
      new[name] = new[name] / (np.linalg.norm(new[name], axis=-1, keepdims=True) + 1e-8)
  return new


def flat(params):
  return {f"{l}/{k}": np.asarray(v, np.float64) for l, p in enumerate(params) for k, v in p.items()}


def run_both(per_level_adam):
  model = build(per_level_adam)
  opt, sched = step_lib.make_optimizer(model, 100, lr=3e-2, warmup_steps=0)
  rng = np.random.default_rng(0)
  xs = [jnp.asarray(rng.normal(size=(8, D)), jnp.float32) for _ in range(5)]
  ts = step_lib.init_train_state(model, opt, jax.random.PRNGKey(1), xs[0])
  step = jax.jit(lambda ts, x: step_lib.train_step(model, opt, sched, ts, x))
  ref_opt, diffs = ReleaseAdam(), []
  for i, x in enumerate(xs):
    params = model.pre_step(ts.params, ts.step)
    grads = jax.grad(lambda p: model.loss(p, ts.model_state, x, step=ts.step)[0])(params)
    g = flat(grads)
    if i < S:    # torch never sees a Level-2 gradient before S
      assert all(np.all(v == 0) for k, v in g.items() if k.startswith("1/"))
      g = {k: v for k, v in g.items() if not k.startswith("1/")}
    want = release_update(ref_opt, flat(params), g, float(sched(i)))
    ts, _ = step(ts, x)
    got = flat(ts.params)
    diffs.append(max(np.max(np.abs(got[k] - want[k])) for k in want))
  return diffs


def test_per_level_adam_matches_release_across_start():
  diffs = run_both(True)
  assert max(diffs) < 2e-5, diffs


def test_shared_count_differs_from_release_after_start():
  diffs = run_both(False)
  assert max(diffs[:S]) < 2e-5 and max(diffs[S:]) > 1e-3, diffs


def test_all_starts_zero_is_optax_adam():
  model = models.build_model(dict(name="cascade", d=D, levels=[
      dict(family="batchtopk", n=16, k=2), dict(family="batchtopk", n=5, k=1)]))
  assert model.adam_start_steps() is None
  assert isinstance(step_lib.make_optimizer(model, 10)[0].init(
      model.init(jax.random.PRNGKey(0), jnp.ones((4, D)))[0])[2], optax.ScaleByAdamState)
