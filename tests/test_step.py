"""The pure train step: every family and the cascade keep unit-norm decoders and learn."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from csae_jax import families, models
from csae_jax import step as step_lib

D, N = 8, 16
OPTIONS = {
    "relu": dict(n=N), "topk": dict(n=N, k=3, aux_k=4, dead_tokens=16),
    "batchtopk": dict(n=N, k=3), "jumprelu": dict(n=N), "gated": dict(n=N),
    "pannealing": dict(n=N), "matryoshka": dict(n=N, k=3, group_sizes=(6, 10)),
    "stacked": dict(n=N, k=3, n2=6, k2=1),
}


def model_configs():
  for name in sorted(families.FAMILIES):
    yield name, dict(name=name, d=D, options=OPTIONS[name])
  yield "cascade", dict(name="cascade", d=D, levels=[dict(family="batchtopk", n=N, k=3),
                                                     dict(family="jumprelu", n=4)])


@pytest.mark.parametrize("name, mc", list(model_configs()))
def test_step_keeps_unit_norm_decoders_and_reduces_loss(name, mc):
  model = models.build_model(mc, total_steps=60)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(32, D)), jnp.float32)
  opt, sched = step_lib.make_optimizer(model, 60, lr=1e-2, warmup_steps=1)
  ts = step_lib.init_train_state(model, opt, jax.random.PRNGKey(0), x)
  step = step_lib.make_jitted_step(model, opt, sched)
  losses = []
  for _ in range(40):
    ts, m = step(ts, x)
    losses.append(float(m["loss"]))
  mask = model.decoder_mask(ts.params)
  leaves = jax.tree_util.tree_leaves(jax.tree_util.tree_map(
      lambda w, m: jnp.linalg.norm(w, axis=-1) if m else None, ts.params, mask))
  assert leaves, "every model has a decoder"
  for norms in leaves:
    np.testing.assert_allclose(np.asarray(norms), 1.0, atol=1e-5)
  assert np.isfinite(losses).all() and losses[-1] < losses[0]
  assert int(ts.step) == 40


def test_april2024_decoder_is_unconstrained():
  model = models.build_model(dict(name="relu", d=D, options=dict(n=N, april2024=True)))
  p, _ = model.init(jax.random.PRNGKey(0), jnp.zeros((2, D)))
  assert not any(jax.tree_util.tree_leaves(model.decoder_mask(p)))


@pytest.mark.parametrize("mc, msg", [
    (dict(name="relu", d=0, options=dict(n=4)), "model.d must be a positive integer, got 0"),
    (dict(name="relu", d=4, options=dict(n=-3)), "n must be a positive integer, got -3"),
    (dict(name="topk", d=4, options=dict(n=8, k=9)), "k=9 is larger than the dictionary size n=8"),
    (dict(name="batchtopk", d=4, options=dict(n=8, k=0)), "k must be a positive integer, got 0"),
    (dict(name="sparsee", d=4, options=dict(n=8)), "unknown SAE family 'sparsee'"),
    (dict(name="relu", d=4, options=dict(n=8, kk=2)), r"no option\(s\) \['kk'\]"),
    (dict(name="matryoshka", d=4, options=dict(n=8, k=2, group_sizes=(3, 4))), "sum to 7, not n=8"),
    (dict(name="stacked", d=4, options=dict(n=8, k=2, n2=4, k2=5)), "k2=5 is larger"),
])
def test_bad_configs_name_the_value(mc, msg):
  with pytest.raises(ValueError, match=msg):
    models.build_model(mc)


def test_fit_rejects_bad_batches():
  model = models.build_model(dict(name="relu", d=D, options=dict(n=N)))
  with pytest.raises(ValueError, match="dimension 5 but the model expects d=8"):
    step_lib.fit(model, iter([np.zeros((4, 5), np.float32)]), 1, key=jax.random.PRNGKey(0))
  bad = np.zeros((4, D), np.float32)
  bad[2, 3] = np.nan
  with pytest.raises(ValueError, match="NaN/Inf"):
    step_lib.fit(model, iter([bad]), 1, key=jax.random.PRNGKey(0))
