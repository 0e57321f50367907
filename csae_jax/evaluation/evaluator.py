"""Evaluate one method end to end (SPEC section 4) and persist the result without pickle.

evaluate(subject, source, options) -> Evaluation: one chunked pass over the evaluation tokens,
prototypes of the Level-1 units from the reference embeddings, parent maps (from the parameters,
the co-activation counts, or post-hoc clustering), HMS at every level, reconstruction figures and the
top images of each unit. Saved as arrays.npz (no object arrays) + summary.json, written atomically.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from csae_jax import fileio
from csae_jax.evaluation import codes as codes_lib
from csae_jax.evaluation import hms as hms_lib
from csae_jax.evaluation import parents as parents_lib
from csae_jax.evaluation import sources as sources_lib
from csae_jax.evaluation.subjects import Subject

CHILDREN_MODES = ("alive", "all", "coded")
POSTHOC = ("hac", "spectral")


@dataclasses.dataclass(frozen=True)
class Options:
  chunk_tokens: int = 4096
  top_alive: int = 12
  act_min: float = 1e-3
  # Which Level-1 units count as children: alive (SPEC 4) | all | coded (alive and with
  # non-constant image codes: drops units whose prototype is the uniform mean embedding).
  children: str = "alive"
  posthoc: str | None = None        # None | hac | spectral: parents by clustering Level-1 atoms
  posthoc_clusters: int | None = None   # default: the subject's n2
  hac_linkage: str = "ward"
  spectral_neighbors: int = 10
  top_images: int = 16
  seed: int = 0
  # Dashboard statistics (csae_jax/evaluation/unit_stats.py): histogram bins, quantile bands and
  # examples per band, labels kept per unit, top images with token heatmaps (0 = no heatmap pass).
  unit_stats: bool = True
  hist_bins: int = 24
  quantile_bands: int = 4
  per_band: int = 3
  top_labels: int = 5
  heatmap_images: int = 4
  # None: global 4096-token chunks (SPEC 4); 16: the release's chunks inside 16-image batches
  images_per_batch: int | None = None

  def validate(self):
    if self.children not in CHILDREN_MODES:
      raise ValueError(f"children must be one of {CHILDREN_MODES}, got {self.children!r}")
    if self.posthoc is not None and self.posthoc not in POSTHOC:
      raise ValueError(f"posthoc must be None or one of {POSTHOC}, got {self.posthoc!r}")
    if self.chunk_tokens <= 0 or self.top_alive <= 0 or self.top_images <= 0:
      raise ValueError("chunk_tokens, top_alive and top_images must be positive")
    for name in ("hist_bins", "quantile_bands", "per_band", "top_labels"):
      if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
        raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
    if not isinstance(self.heatmap_images, int) or self.heatmap_images < 0:
      raise ValueError(f"heatmap_images must be a non-negative integer, got {self.heatmap_images!r}")
    if self.images_per_batch is not None and self.images_per_batch <= 0:
      raise ValueError(f"images_per_batch must be None or positive, got {self.images_per_batch}")


@dataclasses.dataclass
class Evaluation:
  summary: dict                  # per level HMS summaries, recon figures, counts, options
  parents: list                  # per level >= 2: (n_{l-1},) int64 effective parent map
  hms: list                      # per level >= 2: (n_l,) float64, NaN = fewer than 2 children
  child_counts: list             # per level >= 2: (n_l,) int64
  prototypes: np.ndarray         # (n1, e) float32
  alive: np.ndarray              # (n1,) bool
  top_images: np.ndarray         # (n1, t) int64 image indices into the evaluation source
  top_values: np.ndarray         # (n1, t) float32
  level_sizes: list              # n of each level >= 2
  atoms1: np.ndarray | None = None
  atoms2: np.ndarray | None = None   # Level-2 atoms (rows in R^d) when the method has them
  stats: dict | None = None          # per-unit dashboard statistics (unit_stats.compute)

  def save(self, directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    arrays = {"prototypes": self.prototypes, "alive": self.alive, "top_images": self.top_images,
              "top_values": self.top_values, "level_sizes": np.asarray(self.level_sizes, np.int64)}
    for l, (p, h, c) in enumerate(zip(self.parents, self.hms, self.child_counts)):
      arrays[f"parents_{l + 2}"] = p
      arrays[f"hms_{l + 2}"] = h
      arrays[f"child_counts_{l + 2}"] = c
    for name in ("atoms1", "atoms2"):
      if getattr(self, name) is not None:
        arrays[name] = getattr(self, name)
    for k, v in (self.stats or {}).items():
      arrays["stat_" + k] = v
    _atomic_savez(os.path.join(directory, "arrays.npz"), arrays)
    _atomic_json(os.path.join(directory, "summary.json"), self.summary)

  @classmethod
  def load(cls, directory: str) -> "Evaluation":
    path = os.path.join(directory, "arrays.npz")
    with np.load(path, allow_pickle=False) as z:
      a = {k: z[k] for k in z.files}
    with open(os.path.join(directory, "summary.json")) as f:
      summary = json.load(f)
    sizes = [int(s) for s in a["level_sizes"]]
    levels = range(2, len(sizes) + 2)
    return cls(summary, [a[f"parents_{l}"] for l in levels], [a[f"hms_{l}"] for l in levels],
               [a[f"child_counts_{l}"] for l in levels], a["prototypes"], a["alive"],
               a["top_images"], a["top_values"], sizes, a.get("atoms1"), a.get("atoms2"),
               {k[5:]: v for k, v in a.items() if k.startswith("stat_")} or None)


def _atomic_savez(path, arrays):
  fileio.write_atomic(path, lambda f: np.savez(f, **arrays), binary=True)


def _atomic_json(path, obj):
  fileio.write_json_atomic(path, obj, default=_json_default)


def _json_default(o):
  if isinstance(o, (np.integer,)):
    return int(o)
  if isinstance(o, (np.floating,)):
    return float(o)
  if isinstance(o, np.ndarray):
    return o.tolist()
  raise TypeError(f"not JSON serialisable: {type(o)}")


def evaluate(subject: Subject, source, options: Options = Options(), *, progress=None,
             pass_result: codes_lib.PassResult | None = None) -> Evaluation:
  """Evaluate a Subject on an evaluation source with reference embeddings (SPEC 4)."""
  options.validate()
  sources_lib.check_source(source, subject.d, need_embeddings=True)
  need_coact = subject.param_parent_maps is None and options.posthoc is None
  if need_coact and subject.level2 is None:
    raise ValueError(f"a {subject.kind!r} subject has no Level 2: give posthoc='hac' or "
                     "'spectral', or a Level-2 SAE")
  if pass_result is None:
    pass_result = codes_lib.run_pass(
        subject, source,
        codes_lib.PassOptions(options.chunk_tokens, options.top_alive, options.act_min,
                              coactivation=need_coact,
                              images_per_batch=options.images_per_batch),
        progress=progress)
  pr = pass_result
  if options.children == "all":
    keep = np.ones(subject.n1, bool)
  elif options.children == "alive":
    keep = pr.alive
  else:
    codes_range = pr.image_codes.max(0) - pr.image_codes.min(0)
    keep = pr.alive & (codes_range > hms_lib.RANGE_EPS)
  if options.posthoc is not None:
    k = options.posthoc_clusters or subject.n2 or max(2, subject.n1 // 2)
    maps = (parents_lib.cluster_atoms(subject.atoms1, k, options.posthoc, keep=keep,
                                      linkage=options.hac_linkage,
                                      n_neighbors=options.spectral_neighbors, seed=options.seed),)
    sizes = (int(k),)
  elif subject.param_parent_maps is not None:
    maps, sizes = subject.param_parent_maps, subject.level_sizes
  else:
    maps, sizes = (parents_lib.coactivation_parents(pr.coact),), (subject.n2,)
  r1 = hms_lib.prototypes(pr.image_codes, source.embeddings())
  levels = hms_lib.hms_levels(r1, maps, sizes, keep1=keep)
  top_idx, top_val = codes_lib.top_images(pr.image_codes, options.top_images)
  summary = {
      "kind": subject.kind, "n1": subject.n1, "level_sizes": list(map(int, sizes)),
      "alive": int(pr.alive.sum()), "alive_fraction": float(pr.alive.mean()),
      "recon": pr.recon, "options": dataclasses.asdict(options),
      "levels": {f"level{l + 2}": dict(lv["summary"],
                                        with_parent=int((lv["parent"] >= 0).sum()))
                 for l, lv in enumerate(levels)},
      "eval_images": int(source.num_images), "eval_tokens": int(source.num_tokens),
  }
  if "level_recon" in subject.extra:   # CSAE: each level >= 2 reconstructs the atoms below
    summary["level_recon"] = subject.extra["level_recon"]
  summary["hms"] = summary["levels"]["level2"]
  stats = _unit_stats(subject, source, options, pr, levels[0]["parent"], top_idx, top_val,
                      atoms2=None if options.posthoc is not None else subject.atoms2)
  return Evaluation(summary, [lv["parent"] for lv in levels], [lv["hms"] for lv in levels],
                    [lv["count"] for lv in levels], r1, pr.alive, top_idx,
                    top_val.astype(np.float32), list(map(int, sizes)), subject.atoms1,
                    None if options.posthoc is not None else subject.atoms2, stats)


def _unit_stats(subject, source, options, pr, parent, top_idx, top_val, atoms2):
  """The dashboard's per-unit statistics and token heatmaps (unit_stats), or None when off."""
  if not options.unit_stats:
    return None
  from csae_jax.evaluation import unit_stats
  stats = unit_stats.compute(pr.image_codes, source.labels, atoms1=subject.atoms1, parent=parent,
                             atoms2=atoms2, bins=options.hist_bins, bands=options.quantile_bands,
                             per_band=options.per_band, top_labels=options.top_labels)
  if options.heatmap_images > 0:
    stats.update(unit_stats.heatmaps(subject, source, top_idx, top_val, options.heatmap_images,
                                     options.chunk_tokens, options.images_per_batch))
  return stats
