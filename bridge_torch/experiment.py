"""The steering experiment (SPEC 5; the paper's Table 3).

plan_clusters: from the export and its training store, the Level-2 clusters (alive children, >= 2),
  sigma_A from the cluster's top training images, the arms and the concept each cluster stands for.
run_experiment: baseline captions on held-out images; per cluster and arm, insertion (+k sigma_A)
  on held-out images and suppression (-k sigma_A) on the images whose baseline caption already
  expresses the concept; a judge decides. Returns Table 3 rows (appeared %, removed % per arm)
  and every caption.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import functools
import math
import os
from typing import Callable, Sequence

import numpy as np

from csae_jax import fileio
from bridge_torch import release_steering
from bridge_torch import steering
from bridge_torch.judges import Concept, Judge
from bridge_torch.sae import TorchExport, TorchSAE

ARMS = ("baseline", "rand1", "best_child", "cluster", "matryoshka")


@dataclasses.dataclass
class SteerConfig:
  num_clusters: int = 10
  clusters: tuple[int, ...] = ()          # given Level-2 units (else random with seed)
  concepts: dict = dataclasses.field(default_factory=dict)   # unit -> concept label (optional)
  seed: int = 0
  top_images: int = 10
  insert_images: int = 100                # held-out images per cluster (paper: 100)
  scale_mult: float = 3.0                 # c = +/- scale_mult * sigma_A
  threshold_floor: float = 1.0            # theta' = max(Level-1 threshold, floor)
  min_children: int = 2
  chunk_tokens: int = 4096
  # the release's top images, sigma_A and alive rule (bridge_torch/release_steering.py)
  release_faithful: bool = False


@dataclasses.dataclass
class ClusterPlan:
  unit: int
  arms: steering.Arms
  sigma: float
  sigma_matryoshka: float | None
  concept: Concept
  top_images: np.ndarray


def _concept_for(unit, tops, cfg: SteerConfig, labels, label_names) -> Concept:
  if unit in cfg.concepts or str(unit) in cfg.concepts:
    return Concept.from_label(str(cfg.concepts.get(unit, cfg.concepts.get(str(unit)))))
  if labels is None or not label_names:
    raise ValueError(f"cluster {unit}: no concept given and the training store has no label "
                     "names; pass concepts={unit: 'label'} (--concepts)")
  top_label = collections.Counter(int(labels[i]) for i in tops).most_common(1)[0][0]
  return Concept.from_label(str(label_names[top_label]))


def plan_clusters(export: TorchExport, read_tokens, token_offsets, cfg: SteerConfig, *,
                  labels=None, label_names=None, matryoshka: TorchSAE | None = None
                  ) -> list[ClusterPlan]:
  """Clusters, scales, arms and concepts from the training activations (SPEC 5)."""
  if cfg.release_faithful:
    codes_fn = functools.partial(release_steering.dense_image_means, read_tokens=read_tokens,
                                 token_offsets=token_offsets, chunk_tokens=cfg.chunk_tokens)
  else:
    codes_fn = functools.partial(steering.image_codes, read_tokens=read_tokens,
                                 token_offsets=token_offsets, chunk_tokens=cfg.chunk_tokens)

  def scale(sae, v_, atoms_):
    if not cfg.release_faithful:
      return steering.concept_scale(v_, atoms_, float(sae.threshold), cfg.top_images,
                                    cfg.threshold_floor)
    return release_steering.token_concept_scale(
        sae, read_tokens, token_offsets, atoms_, steering.top_images(v_, atoms_, cfg.top_images),
        float(sae.threshold), cfg.threshold_floor)

  v, alive = codes_fn(export.level1)
  vm = None
  if matryoshka is not None:
    vm, _ = codes_fn(matryoshka)
  cands = steering.clusters(export, alive, cfg.min_children)
  units = steering.choose_clusters(cands, cfg.num_clusters, cfg.seed, cfg.clusters)
  plans = []
  for i, unit in enumerate(units):
    atoms = cands[unit]
    arms = steering.make_arms(v, atoms, alive, cfg.seed + i, vm, cfg.top_images)
    sigma = scale(export.level1, v, atoms)
    sigma_m = None
    if matryoshka is not None:
      sigma_m = scale(matryoshka, vm, arms.matryoshka)
    tops = steering.top_images(v, atoms, cfg.top_images)
    plans.append(ClusterPlan(unit, arms, sigma, sigma_m,
                             _concept_for(unit, tops, cfg, labels, label_names), tops))
  return plans


def _pct(num, den):
  return 100.0 * num / den if den else float("nan")


def run_experiment(plans: Sequence[ClusterPlan], caption_fn: Callable, images: Sequence,
                   image_ids: Sequence[str], hook: steering.SteeringHook, judge: Judge,
                   cfg: SteerConfig, matryoshka_hook: steering.SteeringHook | None = None,
                   log: Callable[[str], None] = lambda s: None):
  """caption_fn(image) -> str runs the model with the hooks attached (only one clamp at a time).

  Returns (table rows per arm, per-cluster rows, caption rows).
  """
  if len(images) != len(image_ids):
    raise ValueError(f"{len(images)} images but {len(image_ids)} image ids")
  hook.clear()
  if matryoshka_hook is not None:
    matryoshka_hook.clear()
  baseline = [caption_fn(img) for img in images]
  log(f"baseline captions: {len(baseline)}")
  captions, per_cluster = [], []
  totals = {a: collections.Counter() for a in ARMS}
  rng = np.random.default_rng(cfg.seed)
  for plan in plans:
    n_ins = min(cfg.insert_images, len(images))
    ins = np.sort(rng.choice(len(images), size=n_ins, replace=False))
    base_says = judge.judge(baseline, plan.concept, images)
    supp = np.flatnonzero(base_says)
    arm_sets = {"rand1": (hook, plan.arms.rand1, plan.sigma),
                "best_child": (hook, plan.arms.best_child, plan.sigma),
                "cluster": (hook, plan.arms.cluster, plan.sigma)}
    if matryoshka_hook is not None and plan.arms.matryoshka is not None:
      arm_sets["matryoshka"] = (matryoshka_hook, plan.arms.matryoshka, plan.sigma_matryoshka)
    results = {"baseline": (sum(base_says[i] for i in ins), sum(not base_says[i] for i in supp))}
    for i in ins:
      captions.append((plan.unit, plan.concept.name, "baseline", "insert", image_ids[i],
                       baseline[i], bool(base_says[i])))
    for arm, (h, atoms, sigma) in arm_sets.items():
      counts = []
      for direction, idx, sign in (("insert", ins, 1.0), ("suppress", supp, -1.0)):
        h.set_clamp(atoms, sign * cfg.scale_mult * sigma)
        try:
          caps = [caption_fn(images[i]) for i in idx]
        finally:
          h.clear()
        says = judge.judge(caps, plan.concept, [images[i] for i in idx]) if caps else []
        for i, c, s in zip(idx, caps, says):
          captions.append((plan.unit, plan.concept.name, arm, direction, image_ids[i], c, bool(s)))
        counts.append(sum(says) if direction == "insert" else sum(not s for s in says))
      results[arm] = tuple(counts)
      log(f"cluster {plan.unit} ({plan.concept.name}) {arm}: appeared {counts[0]}/{len(ins)}, "
          f"removed {counts[1]}/{len(supp)}")
    for arm, (appeared, removed) in results.items():
      totals[arm].update(appeared=appeared, n_insert=len(ins), removed=removed,
                         n_suppress=len(supp))
      per_cluster.append({"unit": plan.unit, "concept": plan.concept.name, "arm": arm,
                          "sigma": plan.sigma_matryoshka if arm == "matryoshka" else plan.sigma,
                          "appeared_pct": _pct(appeared, len(ins)),
                          "removed_pct": _pct(removed, len(supp)),
                          "n_insert": len(ins), "n_suppress": len(supp)})
  table = [{"arm": arm, "appeared_pct": _pct(t["appeared"], t["n_insert"]),
            "removed_pct": _pct(t["removed"], t["n_suppress"]),
            "n_insert": t["n_insert"], "n_suppress": t["n_suppress"]}
           for arm, t in totals.items() if t["n_insert"]]
  return table, per_cluster, captions


CAPTION_FIELDS = ("unit", "concept", "arm", "direction", "image_id", "caption", "judged")


def _write_csv_atomic(path, header, rows):
  def write(f):
    w = csv.writer(f)
    w.writerow(header)
    for r in rows:
      w.writerow([r[h] for h in header] if isinstance(r, dict) else list(r))
  fileio.write_atomic(os.path.abspath(path), write)


def write_outputs(out_dir, table, per_cluster, captions) -> dict[str, str]:
  os.makedirs(out_dir, exist_ok=True)
  paths = {"table3": os.path.join(out_dir, "table3.csv"),
           "per_cluster": os.path.join(out_dir, "table3_per_cluster.csv"),
           "captions": os.path.join(out_dir, "captions.csv")}
  _write_csv_atomic(paths["table3"], ("arm", "appeared_pct", "removed_pct", "n_insert",
                                      "n_suppress"), table)
  _write_csv_atomic(paths["per_cluster"], ("unit", "concept", "arm", "sigma", "appeared_pct",
                                           "removed_pct", "n_insert", "n_suppress"), per_cluster)
  _write_csv_atomic(paths["captions"], CAPTION_FIELDS, captions)
  return paths


def format_table(table) -> str:
  lines = [f"{'arm':<12}{'appeared %':>12}{'removed %':>12}{'n_ins':>8}{'n_sup':>8}"]
  for r in table:
    fmt = lambda x: "   n/a" if isinstance(x, float) and math.isnan(x) else f"{x:.1f}"
    lines.append(f"{r['arm']:<12}{fmt(r['appeared_pct']):>12}{fmt(r['removed_pct']):>12}"
                 f"{r['n_insert']:>8}{r['n_suppress']:>8}")
  return "\n".join(lines)
