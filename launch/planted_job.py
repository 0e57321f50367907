"""The planted-hierarchy main job as a function (launch/planted.py calls `run`; a notebook run from
the repository root can `from launch import planted_job`)."""
from __future__ import annotations

import pathlib

import jax
import numpy as np

from csae_jax import planted
from csae_jax.trainer.checkpoint import write_json_atomic


def level2_concepts(model, params, parent_map) -> np.ndarray:
  """Each Level-2 unit as a point in activation space: b2 + (mean code on its children) * atom.

  A Level-2 atom is a direction relative to b2, so the concept a unit stands for is the
  reconstruction of its typical child, not the atom alone.
  """
  from csae_jax import cascade
  lv = model.cfg.levels[1]
  fam = cascade.get_family(lv.family)
  h = np.asarray(fam.dense_activation(params[1], params[0]["W_dec"], lv.cfg))   # (n1, n2)
  n2 = h.shape[1]
  onehot = (parent_map[:, None] == np.arange(n2)[None]).astype(np.float64)
  hbar = (h * onehot).sum(0) / np.maximum(onehot.sum(0), 1)
  return np.asarray(params[1]["b_dec"])[None] + hbar[:, None] * np.asarray(params[1]["W_dec"])


def hierarchy_listing(pl, atoms, parent_map, parent_atoms):
  """Every Level-2 unit with its children, each child's best planted child and cosine."""
  a = atoms / np.linalg.norm(atoms, axis=1, keepdims=True)
  cos = a @ pl.child_dirs.T
  pa = parent_atoms / np.linalg.norm(parent_atoms, axis=1, keepdims=True)
  pcos = pa @ pl.parent_dirs.T
  units = []
  for r in range(parent_atoms.shape[0]):
    kids = np.flatnonzero(parent_map == r)
    units.append({
        "unit": r, "best_planted_parent": int(pcos[r].argmax()),
        "best_planted_parent_cos": float(pcos[r].max()),
        "children": [{"atom": int(j), "planted_child": int(cos[j].argmax()),
                      "planted_parent": int(pl.child_parent[cos[j].argmax()]),
                      "cos": float(cos[j].max())} for j in kids]})
  return {"units": units, "no_parent": np.flatnonzero(parent_map < 0).tolist()}


def run(config, workdir: str) -> dict:
  """Train config.model on config.data.planted with the trainer; write and return a report.

  Training goes through csae_jax.trainer (checkpoints, resume, metrics.jsonl, TensorBoard), so
  re-running the same command resumes, and a finished run is refused without overwrite.
  """
  from csae_jax import trainer
  if config.data.kind != "planted":
    raise ValueError(f"the planted job needs config.data.kind='planted', got {config.data.kind!r}")
  if config.model.name != "cascade":
    raise ValueError("the planted job reports a hierarchy: config.model.name must be 'cascade', "
                     f"got {config.model.name!r}")
  result = trainer.train(config, workdir)
  trained = trainer.load_run(workdir)
  pl = planted.make_planted(planted.PlantedConfig(**trained.config.data.planted.to_dict()))
  params = jax.device_get(trained.params)
  model = trained.model
  parent_map = np.asarray(model.parent_maps(params)[0])
  atoms = np.asarray(params[0]["W_dec"])
  parent_atoms = level2_concepts(model, params, parent_map)
  recovery = planted.recovery_report(pl, atoms, parent_map, parent_atoms)
  final = result.metrics
  summary = {
      "steps": trained.step, "input_scale": trained.input_scale,
      "tokens_per_s": result.tokens_per_s,
      "level1": {k: final.get(f"l1/{k}") for k in ("fvu", "l0", "dead_fraction")},
      "level2": {k: final.get(f"l2/{k}") for k in ("fvu", "l0", "dead_fraction", "live_atoms")},
      **recovery,
  }
  report = {"summary": summary, "config": trained.config.to_dict()}
  write_json_atomic(pathlib.Path(workdir) / "hierarchy.json",
                    hierarchy_listing(pl, atoms, parent_map, parent_atoms))
  write_json_atomic(pathlib.Path(workdir) / "report.json", report)
  return report
