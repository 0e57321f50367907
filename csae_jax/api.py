"""Notebook API: `csae_jax.load(workdir)` returns a learned hierarchy you can browse in Python.

  import csae_jax
  h = csae_jax.load("/tmp/exp_planted")            # an experiment (python -m launch.experiments)
  h = csae_jax.load("/tmp/run", eval_store="/data/stores/val")   # or one trainer run + a store
  h = csae_jax.load("/tmp/export")                 # or a native export (python -m csae_jax.export)
  h.hms_summary()                                  # {'mean':..., 'median':..., 'count':...}
  best = h.top_units(5)                            # Level-2 units with the highest HMS
  h.children(best[0])                              # their Level-1 children
  h.top_images(h.children(best[0])[0])             # [{'image': i, 'image_id': ..., 'value': ...}]
  h.tree()                                         # the whole concept tree as nested dicts

Parameters are for raw activations (the run's input scale folded in, SPEC 1).
"""
from __future__ import annotations

import json
import os

import numpy as np

from csae_jax.evaluation import evaluator as eval_lib
from csae_jax.evaluation import experiments as exp_lib
from csae_jax.evaluation import sources as sources_lib
from csae_jax.evaluation import subjects as subjects_lib


class Hierarchy:
  """A trained method with its evaluation: parents, children, HMS, top images, the concept tree."""

  def __init__(self, *, config, runs: dict, evaluation, source, method: str, workdir: str):
    self.config = config                 # the training config (ConfigDict) of the Level-1 model
    self.runs = runs                     # run name -> csae_jax.trainer.Run
    self.evaluation = evaluation         # csae_jax.evaluation.Evaluation or None
    self.source = source                 # evaluation store (image ids, labels) or None
    self.method = method
    self.workdir = workdir
    main = next(iter(runs.values()))     # the Level-1 model (first run of the method)
    self.model = main.model
    self.params, self.model_state = main.raw_params()
    self.input_scale = main.input_scale

  # ---------------------------------------------------------------- structure
  @property
  def num_levels(self) -> int:
    if self.evaluation is not None:
      return len(self.evaluation.parents) + 1
    return self.model.cfg.num_levels if self.model.is_cascade else 1

  @property
  def parent_maps(self) -> tuple:
    """One int array per level >= 2: parent of each unit one level down (-1 = none).

    From the evaluation when present (children restricted as evaluated, e.g. alive units),
    otherwise from the cascade's parameters (SPEC 4).
    """
    if self.evaluation is not None:
      return tuple(np.asarray(p) for p in self.evaluation.parents)
    if self.model.is_cascade:
      return tuple(np.asarray(p, np.int64) for p in self.model.parent_maps(self.params))
    raise ValueError(f"{self.method!r} has no parent map without an evaluation; load it with "
                     "eval_store=... (flat models get co-activation or post-hoc parents)")

  def _level(self, level: int) -> int:
    if not 2 <= level <= self.num_levels:
      raise ValueError(f"level must be in [2, {self.num_levels}] for a parent, got {level}")
    return level - 2

  def children(self, unit: int, level: int = 2) -> np.ndarray:
    """Units of level `level - 1` whose parent is `unit` of level `level`."""
    return np.flatnonzero(self.parent_maps[self._level(level)] == int(unit))

  def parent(self, unit: int, level: int = 1) -> int:
    """Parent (a unit of level `level + 1`) of `unit`, -1 when it has none."""
    return int(self.parent_maps[self._level(level + 1)][int(unit)])

  # ---------------------------------------------------------------- HMS
  def _need_eval(self):
    if self.evaluation is None:
      raise ValueError("no evaluation loaded: pass eval_store=<store with embeddings> to "
                       "csae_jax.load, or run python -m launch.experiments")
    return self.evaluation

  def hms(self, level: int = 2) -> np.ndarray:
    """HMS per unit of `level` (NaN where it has fewer than two children)."""
    return np.asarray(self._need_eval().hms[self._level(level)])

  def hms_summary(self, level: int = 2) -> dict:
    return dict(self._need_eval().summary["levels"][f"level{level}"])

  def top_units(self, n: int = 10, level: int = 2) -> np.ndarray:
    """Units of `level` with the highest HMS (parents with >= 2 children only)."""
    h = self.hms(level)
    ok = np.flatnonzero(np.isfinite(h))
    return ok[np.argsort(-h[ok], kind="stable")][:n]

  # ---------------------------------------------------------------- images
  def top_images(self, unit: int, level: int = 1, k: int = 8) -> list[dict]:
    """The images that activate a unit most (Level 1), or its children's best images (level >= 2)."""
    ev = self._need_eval()
    units = np.array([int(unit)])
    for lv in range(level, 1, -1):    # descend to the Level-1 units under `unit`
      units = np.flatnonzero(np.isin(self.parent_maps[lv - 2], units))
    if units.size == 0:
      return []
    idx = ev.top_images[units].reshape(-1)
    val = ev.top_values[units].reshape(-1)
    order = np.argsort(-val, kind="stable")
    out, seen = [], set()
    ids = list(self.source.image_ids) if self.source is not None else None
    for i in order:
      img = int(idx[i])
      if img in seen or val[i] <= 0:
        continue
      seen.add(img)
      out.append({"image": img, "image_id": ids[img] if ids else None, "value": float(val[i])})
      if len(out) == k:
        break
    return out

  # ---------------------------------------------------------------- tree
  def tree(self, max_children: int | None = None) -> list[dict]:
    """Top-level units (with >= 1 child) sorted by HMS, each with its subtree down to Level 1."""
    maps = self.parent_maps
    top = self.num_levels
    hms = self.evaluation.hms if self.evaluation is not None else None

    def node(level, u):
      d = {"unit": int(u), "level": level}
      if level == 1:
        return d
      kids = np.flatnonzero(maps[level - 2] == u)
      if max_children is not None:
        kids = kids[:max_children]
      if hms is not None:
        h = float(hms[level - 2][u])
        d["hms"] = None if np.isnan(h) else h
      d["children"] = [node(level - 1, c) for c in kids]
      return d

    units = np.flatnonzero(np.bincount(maps[-1][maps[-1] >= 0],
                                       minlength=int(maps[-1].max(initial=-1)) + 1) > 0)
    if hms is not None:
      key = np.where(np.isfinite(hms[-1][units]), hms[-1][units], -np.inf)
      units = units[np.argsort(-key, kind="stable")]
    return [node(top, u) for u in units]

  def dashboard(self, path: str, *, max_parents: int = 200, thumbs_per_child: int = 4,
                image_root: str | None = None) -> str:
    """Write this method's concept dashboard (one self-contained HTML file) to `path`."""
    from csae_jax.evaluation import browser
    self._need_eval()
    display = self.evaluation.summary.get("display", exp_lib.DISPLAY.get(self.method, self.method))
    browser.write_browser(path, self.evaluation, self.source, title=f"{display} concept dashboard",
                          max_parents=max_parents, thumbs_per_child=thumbs_per_child,
                          image_root=image_root, method=self.method)
    return path

  # ---------------------------------------------------------------- encoding
  def encode(self, x) -> np.ndarray:
    """Level-1 inference codes of raw activations x [tokens, d]."""
    return np.asarray(self.model.encode(self.params, self.model_state, np.asarray(x, np.float32)))

  def __repr__(self):
    s = ""
    if self.evaluation is not None:
      h = self.evaluation.summary["hms"]
      s = f", HMS mean {h['mean']:.4f} over {h['count']} parents"
    return f"Hierarchy({self.method!r}, {self.workdir!r}, levels={self.num_levels}{s})"


class ExportedRun:
  """A native export seen as a trained run: parameters already for raw activations."""

  def __init__(self, path):
    from csae_jax import export as export_lib
    ex = export_lib.load_export(path)
    self.path = os.fspath(path)
    self.config = ex.config             # the export's config.json
    self.model, self.params, self.model_state = ex.model, ex.params, ex.state
    self.parents = ex.parents
    self.input_scale = 1.0              # folded into the exported parameters
    self.step = (ex.config.get("metadata") or {}).get("step")

  def raw_params(self):
    return self.params, self.model_state


def is_export_dir(path) -> bool:
  from csae_jax import export as export_lib
  cfg = os.path.join(path, export_lib.CONFIG_FILE)
  if not os.path.isfile(os.path.join(path, export_lib.WEIGHTS_FILE)) or not os.path.isfile(cfg):
    return False
  with open(cfg) as f:
    return json.load(f).get("format") == export_lib.FORMAT


def _evaluate(run, source) -> "eval_lib.Evaluation":
  """HMS evaluation of one run on an evaluation store (post-hoc HAC parents for a flat model)."""
  sources_lib.check_source(source, run.model.d, need_embeddings=True)
  p, s = run.raw_params()
  subject = subjects_lib.from_model(run.model, p, s)
  posthoc = None if subject.param_parent_maps is not None or subject.level2 is not None else "hac"
  return eval_lib.evaluate(subject, source, eval_lib.Options(posthoc=posthoc))


def load(workdir: str | os.PathLike, method: str | None = None, *, eval_store: str | None = None,
         step: int | None = None) -> Hierarchy:
  """Load an experiment workdir, a single trainer run, or a native export directory.

  Experiment (launch.experiments): `method` picks the result (default "csae"). Trainer run: the
  run's parameters (checkpoint `step`, default the latest), with an evaluation on `eval_store`
  (computed once and cached in <workdir>/evaluation; a flat run gets post-hoc HAC parents), or
  without one (cascade parent maps only). Export (python -m csae_jax.export): its parameters,
  evaluated on `eval_store` in memory (the export directory is never written).
  """
  from csae_jax import trainer
  workdir = os.fspath(workdir)
  if is_export_dir(workdir):
    if step is not None:
      raise ValueError(f"{workdir} is an export (one set of parameters); step does not apply")
    run = ExportedRun(workdir)
    source = sources_lib.open_store(eval_store) if eval_store is not None else None
    ev = _evaluate(run, source) if source is not None else None
    name = "csae" if run.model.is_cascade else run.model.name
    return Hierarchy(config=run.config, runs={"export": run}, evaluation=ev, source=source,
                     method=method or name, workdir=workdir)
  exp_path = os.path.join(workdir, "experiment.json")
  if os.path.exists(exp_path):
    import ml_collections
    with open(exp_path) as f:
      exp_config = ml_collections.ConfigDict(json.load(f))
    method = method or "csae"
    key = exp_lib.ALIASES.get(method, method)
    res_dir = os.path.join(workdir, "results", key)
    if not os.path.exists(os.path.join(res_dir, "summary.json")):
      done = sorted(os.listdir(os.path.join(workdir, "results"))) \
          if os.path.isdir(os.path.join(workdir, "results")) else []
      raise FileNotFoundError(f"{workdir} has no evaluated method {method!r}; evaluated: {done}")
    ev = eval_lib.Evaluation.load(res_dir)
    runs = {r: trainer.load_run(os.path.join(workdir, "runs", r))
            for r in exp_lib._runs_of(exp_config, key)}
    train_path, eval_path, _ = exp_lib.prepare_data(exp_config, workdir)
    source = sources_lib.open_store(eval_path)
    h = Hierarchy(config=next(iter(runs.values())).config, runs=runs, evaluation=ev,
                  source=source, method=method, workdir=workdir)
    h.experiment_config = exp_config
    return h
  run = trainer.load_run(workdir, step=step)
  method = method or ("csae" if run.model.is_cascade else run.model.name)
  ev, source = None, None
  cache = os.path.join(workdir, "evaluation")
  if eval_store is not None:
    source = sources_lib.open_store(eval_store)
    fp = f"{eval_store}|{run.step}"
    summary = os.path.join(cache, "summary.json")
    if os.path.exists(summary):
      with open(summary) as f:
        if json.load(f).get("fingerprint") == fp:
          ev = eval_lib.Evaluation.load(cache)
          ev = ev if ev.stats is not None else None   # evaluated before the dashboard stats
    if ev is None:
      ev = _evaluate(run, source)
      ev.summary["fingerprint"] = fp
      ev.save(cache)
  return Hierarchy(config=run.config, runs={"run": run}, evaluation=ev, source=source,
                   method=method, workdir=workdir)
