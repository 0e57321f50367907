"""Parent abstention (cascade.Config.parent_rel_min): orphan atoms get no parent, children keep one."""
import jax.numpy as jnp
import numpy as np
import pytest

from csae_jax import models


def build(rel):
  lv = [dict(family="batchtopk", n=6, k=1, aux_k=None), dict(family="batchtopk", n=2, k=1,
                                                              aux_k=None)]
  return models.build_model(dict(name="cascade", d=4, levels=lv,
                                 cascade=dict(alphas=[0.1], parent_rel_min=rel)))


def params():
  e = np.eye(4)
  c = 1 / np.sqrt(2)
  # four children: two near parent e0, two near e1; two orphans with small projections
  atoms = np.stack([c * (e[0] + e[2]), c * (e[0] - e[2]), c * (e[1] + e[3]), c * (e[1] - e[3]),
                    0.3 * e[0] + np.sqrt(0.91) * e[2], 0.2 * e[1] + np.sqrt(0.96) * e[3]])
  lvl1 = {"W_enc": jnp.asarray(atoms.T, jnp.float32), "b_enc": jnp.zeros(6),
          "W_dec": jnp.asarray(atoms, jnp.float32), "b_dec": jnp.zeros(4)}
  lvl2 = {"W_enc": jnp.asarray(e[:, :2], jnp.float32), "b_enc": jnp.zeros(2),
          "W_dec": jnp.asarray(e[:2], jnp.float32), "b_dec": jnp.zeros(4)}
  return (lvl1, lvl2)


def test_relative_threshold_abstains_on_orphans_only():
  # dense maxima: children .707 (median .707); orphans .3 and .2 < .5 x .707 = .354
  pm = np.asarray(build(0.5).parent_maps(params())[0])
  np.testing.assert_array_equal(pm, [0, 0, 1, 1, -1, -1])
  pm_off = np.asarray(build(0.0).parent_maps(params())[0])
  np.testing.assert_array_equal(pm_off, [0, 0, 1, 1, 0, 1])
  # .3 > .4 x .707 = .283 keeps the first orphan, .2 does not
  np.testing.assert_array_equal(np.asarray(build(0.4).parent_maps(params())[0]),
                                [0, 0, 1, 1, 0, -1])


def test_bad_threshold_rejected():
  with pytest.raises(ValueError, match="parent_rel_min"):
    build(1.5)


def test_min_children_abstains_on_units_with_one_atom():
  p = params()
  # a third Level-2 unit 0.8 e3: best for the second orphan (.78 > .2) only; the child
  # .707 (e1 + e3) scores .566 there and .707 on unit 1
  lv2 = dict(p[1])
  extra = np.zeros((4, 1), np.float32)
  extra[3, 0] = 0.8
  lv2["W_enc"] = jnp.concatenate([p[1]["W_enc"], jnp.asarray(extra)], 1)
  lv2["b_enc"] = jnp.zeros(3)
  lv2["W_dec"] = jnp.asarray(lv2["W_enc"].T)
  lv = [dict(family="batchtopk", n=6, k=1, aux_k=None), dict(family="batchtopk", n=3, k=1,
                                                              aux_k=None)]
  def maps(m):
    model = models.build_model(dict(name="cascade", d=4, levels=lv,
                                    cascade=dict(alphas=[0.1], parent_min_children=m)))
    return np.asarray(model.parent_maps((p[0], lv2))[0])
  np.testing.assert_array_equal(maps(0), [0, 0, 1, 1, 0, 2])
  np.testing.assert_array_equal(maps(2), [0, 0, 1, 1, 0, -1])
  np.testing.assert_array_equal(maps(4), [-1, -1, -1, -1, -1, -1])
  np.testing.assert_array_equal(maps(3), [0, 0, -1, -1, 0, -1])


def test_min_cos_abstains_on_atoms_far_from_their_parent_direction():
  lv = [dict(family="batchtopk", n=6, k=1, aux_k=None), dict(family="batchtopk", n=2, k=1,
                                                              aux_k=None)]

  def maps(t):
    model = models.build_model(dict(name="cascade", d=4, levels=lv,
                                    cascade=dict(alphas=[0.1], parent_min_cos=t)))
    return np.asarray(model.parent_maps(params())[0])

  # cos(atom, parent row): children .707, orphans .3 and .2 (parent rows e0, e1)
  np.testing.assert_array_equal(maps(0.5), [0, 0, 1, 1, -1, -1])
  np.testing.assert_array_equal(maps(0.25), [0, 0, 1, 1, 0, -1])
  np.testing.assert_array_equal(maps(0.75), [-1] * 6)
  with pytest.raises(ValueError, match="parent_min_cos"):
    maps(1.5)
