"""One handle over a flat family or a cascade, built from an ml_collections config.

The trainer, evaluation and export talk to `Model`, never to a family directly, so every method
(flat or cascaded) goes through the same step, checkpoint and report code.

Config schema (config.model):
  name      family name (registry) or "cascade"
  d         activation width
  options   flat: the family's Config fields (n, k, l1_coef, ...)
  levels    cascade: list of dicts {family: ..., <family Config fields>}
  cascade   cascade: dict of cascade.Config fields (alphas, level_start_steps, stop_gradient,
            empty_live, live_eps, parent_min, parent_rel_min, parent_min_children,
            parent_min_cos, coupling)
            plus k_anneal_frac (SPEC 3 default 0.1)
"""
from __future__ import annotations

import dataclasses
from typing import Any


from csae_jax import cascade as cascade_lib
from csae_jax import conventions as cv
from csae_jax.families import get_family
from csae_jax.families import make_config


@dataclasses.dataclass(frozen=True)
class Model:
  name: str        # family name or "cascade"
  cfg: Any         # the family Config or cascade.Config

  @property
  def is_cascade(self) -> bool:
    return self.name == "cascade"

  @property
  def _impl(self):
    return cascade_lib if self.is_cascade else get_family(self.name)

  @property
  def d(self) -> int:
    return self.cfg.d

  @property
  def n(self) -> int:
    return self.cfg.n

  @property
  def adam_b1(self) -> float:
    return self.cfg.adam_b1

  def init(self, key, x_first):
    params = self._impl.init(key, self.cfg, x_first)
    return params, self._impl.init_state(self.cfg)

  def loss(self, params, state, x, step=None, row_mask=None):
    return self._impl.loss(params, state, x, self.cfg, step=step, row_mask=row_mask)

  def encode(self, params, state, x):
    return self._impl.encode(params, state, x, self.cfg)

  def decode(self, params, codes):
    return self._impl.decode(params, codes, self.cfg)

  def dense_activation(self, params, x):
    return self._impl.dense_activation(params, x, self.cfg)

  def fold_scale(self, params, state, s):
    return self._impl.fold_scale(params, state, s, self.cfg)

  def pre_step(self, params, step, state=None):
    """Per-step parameter surgery before the loss (the cascade's level-start bias re-init, then
    the optional k-means re-seeding of levels >= 2, on live atoms when the model state is given
    and cascade.Config.reseed_live_tokens is set)."""
    if self.is_cascade:
      params = cascade_lib.reinit_level_biases(params, self.cfg, step)
      return cascade_lib.reseed_levels(params, self.cfg, step,
                                       cascade_lib.reseed_live(self.cfg, state))
    return params

  def decoder_mask(self, params):
    if self.is_cascade:
      return tuple(cv.decoder_mask(p, lv.cfg.constrained_decoder())
                   for p, lv in zip(params, self.cfg.levels))
    return cv.decoder_mask(params, self.cfg.constrained_decoder())

  def latent_axes(self):
    """The families' declared latent axes, shaped like the params (base.Latent or None leaves)."""
    if self.is_cascade:
      return tuple(get_family(lv.family).SPEC.latent_axes for lv in self.cfg.levels)
    return get_family(self.name).SPEC.latent_axes

  def adam_start_steps(self):
    """Per-leaf Adam start steps (csae_jax/optim.py), or None for one shared count."""
    if not (self.is_cascade and self.cfg.per_level_adam
            and any(self.cfg.start_step(l) for l in range(1, self.cfg.num_levels))):
      return None
    from csae_jax import optim  # pylint: disable=import-outside-toplevel
    return optim.level_start_steps(self.cfg)

  def parent_maps(self, params):
    if not self.is_cascade:
      raise ValueError(f"parent_maps is defined for cascades; {self.name!r} is flat (use the "
                       "co-activation rule of csae_jax.evaluation)")
    return cascade_lib.parent_maps(params, self.cfg)


def _to_dict(c) -> dict:
  if c is None:
    return {}
  if hasattr(c, "to_dict"):
    return c.to_dict()
  return dict(c)


def build_model(model_config, total_steps: int | None = None) -> Model:
  """Model from config.model; for cascades k annealing over k_anneal_frac x total_steps and
  re-seeding up to reseed_until_frac x total_steps."""
  mc = _to_dict(model_config)
  name = mc.get("name")
  if name is None:
    raise ValueError("config.model.name is missing (a family name or 'cascade')")
  d = mc.get("d")
  cv.check_positive("model.d", d)
  if name != "cascade":
    opts = _to_dict(mc.get("options"))
    if "total_steps" in {f.name for f in dataclasses.fields(get_family(name).Config)}:
      opts.setdefault("total_steps", total_steps or 10_000)
    return Model(name, make_config(name, d=d, **opts))
  levels_cfg = mc.get("levels") or []
  casc = _to_dict(mc.get("cascade"))
  frac = casc.pop("k_anneal_frac", 0.1)
  # Re-seeding up to a fraction of the run (so a config stays right when --config.steps changes);
  # an explicit reseed_until wins.
  until_frac = casc.pop("reseed_until_frac", None)
  if until_frac is not None:
    if isinstance(until_frac, bool) or not 0.0 <= float(until_frac) <= 1.0:
      raise ValueError(f"cascade.reseed_until_frac must be in [0, 1], got {until_frac!r}")
    if not total_steps:
      raise ValueError("cascade.reseed_until_frac needs the run's total_steps")
    casc.setdefault("reseed_until", int(float(until_frac) * total_steps))
  levels = []
  for i, lv in enumerate(levels_cfg):
    lv = _to_dict(lv)
    fam = lv.pop("family", "batchtopk")
    fields = {f.name for f in dataclasses.fields(get_family(fam).Config)}
    if "k_anneal_steps" in fields and total_steps and frac:
      lv.setdefault("k_anneal_steps", int(frac * total_steps))
    if "total_steps" in fields:
      lv.setdefault("total_steps", total_steps or 10_000)
    try:
      levels.append(cascade_lib.Level(fam, make_config(fam, d=d, **lv)))
    except ValueError as e:
      raise ValueError(f"cascade level {i + 1}: {e}") from None
  for key in ("alphas", "level_start_steps"):
    if key in casc:
      casc[key] = tuple(casc[key])
  cfg = cascade_lib.Config(levels=tuple(levels), **casc)
  cfg.validate()
  return Model("cascade", cfg)


PyTree = Any
