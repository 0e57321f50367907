"""The planted-hierarchy job as a function (the launch script and notebooks call `run`)."""
from __future__ import annotations

import json
import os
import tempfile

import jax
import numpy as np

from csae_jax import conventions as cv
from csae_jax import models
from csae_jax import planted
from csae_jax import training


def write_json_atomic(path: str, obj) -> None:
  d = os.path.dirname(os.path.abspath(path))
  os.makedirs(d, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".json")
  with os.fdopen(fd, "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


def batches(tokens: np.ndarray, batch_size: int, seed: int):
  """Batch i = rows drawn by a stateless rule of (seed, i), so a resumed run sees the same data."""
  i = 0
  while True:
    rng = np.random.default_rng([seed, i])
    yield tokens[rng.integers(0, len(tokens), batch_size)]
    i += 1


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


def run(config, workdir: str, log_fn=None) -> dict:
  """Train config.model on the planted hierarchy config.data.planted; write and return a report."""
  report_path = os.path.join(workdir, "report.json")
  if os.path.exists(report_path) and not config.get("overwrite", False):
    raise FileExistsError(f"{report_path} exists: this run is finished; pass "
                          "--config.overwrite=True or choose another --workdir")
  pcfg = planted.PlantedConfig(**config.data.planted.to_dict())
  if pcfg.d != config.model.d:
    raise ValueError(f"planted data have d={pcfg.d} but config.model.d={config.model.d}")
  pl = planted.make_planted(pcfg)
  scale = cv.estimate_input_scale([pl.tokens])
  tokens = pl.tokens / scale
  model = models.build_model(config.model, total_steps=config.steps)
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  os.makedirs(workdir, exist_ok=True)
  with open(metrics_path, "w") as mf:
    def log(step, m):
      mf.write(json.dumps({"step": step, **m}) + "\n")
      mf.flush()
      if log_fn is not None:
        log_fn(step, m)

    ts, final = training.fit(model, batches(tokens, config.batch_size, config.seed), config.steps,
                             key=jax.random.PRNGKey(config.seed), lr=config.lr,
                             warmup_steps=config.warmup_steps, log_every=config.log_every,
                             log_fn=log)
  params = jax.device_get(ts.params)
  if not model.is_cascade:
    raise ValueError("the planted job reports a hierarchy: config.model.name must be 'cascade'")
  parent_map = np.asarray(model.parent_maps(params)[0])
  atoms = np.asarray(params[0]["W_dec"])
  parent_atoms = level2_concepts(model, params, parent_map)
  recovery = planted.recovery_report(pl, atoms, parent_map, parent_atoms)
  summary = {
      "steps": config.steps, "input_scale": scale,
      "level1": {k: final[f"l1/{k}"] for k in ("fvu", "l0", "dead_fraction")},
      "level2": {k: final[f"l2/{k}"] for k in ("fvu", "l0", "dead_fraction", "live_atoms")},
      **recovery,
  }
  report = {"summary": summary, "config": config.to_dict()}
  write_json_atomic(os.path.join(workdir, "hierarchy.json"),
                    hierarchy_listing(pl, atoms, parent_map, parent_atoms))
  write_json_atomic(report_path, report)
  return report
