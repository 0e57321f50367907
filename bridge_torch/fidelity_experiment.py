"""EfficientNet-lite0 experiment grid with spliced-model fidelity per method (issue 12, item 5).

  python -m bridge_torch.fidelity_experiment --workdir=/tmp/exp_effnet [--methods=batchtopk,csae]

1. <workdir>/data/{train,eval}: activation stores of config.fidelity.layer on crops of the
   scikit-image photos and procedural scenes (disjoint seeds), embeddings = pooled features;
2. csae_jax.evaluation.experiments.run_experiment on them (HMS, reconstruction tables);
3. per method, its SAE spliced into the layer on the eval images: tables/fidelity.{md,csv} and
   results/<method>/fidelity.json (bridge_torch.fidelity).
"""
from __future__ import annotations

import copy
import importlib.util
import json
import os
import tempfile

import numpy as np
import torch
from absl import app
from absl import flags

from bridge_torch import efficientnet_data as ed
from bridge_torch import fidelity as fid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_config():
  path = os.path.join(ROOT, "configs", "experiments_efficientnet.py")
  spec = importlib.util.spec_from_file_location("experiments_efficientnet", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


def split_images(f, split: str):
  """The deterministic image set of a split (train and eval use different crop seeds)."""
  if split == "train":
    return ed.image_set(f.train_crops_per_photo, f.train_scenes, f.image_size, f.seed)
  return ed.image_set(f.eval_crops_per_photo, f.eval_scenes, f.image_size, f.seed + 1000)


@torch.no_grad()
def build_store(model, f, split: str, path: str) -> str:
  """Write (once) the store of layer tokens with pooled-feature embeddings for `split`."""
  from csae_jax import store as store_lib
  if os.path.exists(os.path.join(path, store_lib.MANIFEST)):
    return path
  images, src = split_images(f, split)
  fmap, _ = ed.layer_output(model, f.layer, images)
  tokens, offsets = ed.fmap_tokens(fmap)
  emb = torch.cat([model.extract_features(images[s:s + 64]).mean((2, 3))
                   for s in range(0, len(images), 64)]).numpy()
  names = list(ed.PHOTOS) + ["procedural_scene"]
  labels = np.where(src >= 0, src, len(ed.PHOTOS))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  store_lib.write_store(path, tokens, offsets, labels=labels,
                        image_ids=[f"{names[l]}_{i}" for i, l in enumerate(labels)],
                        embeddings=emb, label_names=names, split=split,
                        model="efficientnet-lite0", hooked_module=f.layer,
                        embedding_backbone="efficientnet-lite0-pooled")
  return path


def method_fidelity(config, workdir: str, model, images, clean, mean_token, methods,
                    train_path: str, d: int) -> list[dict]:
  """Fidelity of every method's Level-1 SAE spliced at config.fidelity.layer."""
  from csae_jax.evaluation import experiments as ex
  cfg = copy.deepcopy(config)
  cfg.eval.encoding = config.fidelity.encoding
  models = ex.run_models(config, d)
  runs, rows = {}, []
  ablated = fid.spliced_logits(model, config.fidelity.layer, images,
                               lambda x: np.broadcast_to(mean_token, x.shape).copy())
  for method in methods:
    for r in ex.method_runs(config, method):
      if r not in runs:
        runs[r] = ex.train_or_load(config, os.path.join(workdir, "runs", r), models[r],
                                   train_path)
    subject = ex.method_subject(cfg, method, runs)
    spliced = fid.spliced_logits(model, config.fidelity.layer, images,
                                 fid.subject_reconstruct(subject))
    row = {"method": method, "display": ex.DISPLAY[method],
           "runs": "+".join(ex.method_runs(config, method)),
           **fid.fidelity_metrics(clean, spliced, ablated)}
    out = os.path.join(workdir, "results", ex.ALIASES.get(method, method))
    os.makedirs(out, exist_ok=True)
    _atomic_write(os.path.join(out, "fidelity.json"), json.dumps(row, indent=2))
    rows.append(row)
  return rows


def write_tables(tables_dir: str, rows: list[dict], config) -> dict[str, str]:
  os.makedirs(tables_dir, exist_ok=True)
  f = config.fidelity
  keys = ("display", "top1_agreement", "kl", "kl_recovered", "kl_mean_ablation", "images")
  md = [f"Spliced-model fidelity: EfficientNet-lite0, SAE at `{f.layer}` ({f.encoding} "
        f"encoding), {rows[0]['images'] if rows else 0} held-out images (issue 12, item 5)", "",
        "| method | top-1 agreement | KL (nats) | KL recovered | KL mean-ablation |",
        "|---|---|---|---|---|"]
  for r in rows:
    md.append(f"| {r['display']} | {r['top1_agreement']:.3f} | {r['kl']:.4f} | "
              f"{r['kl_recovered']:.3f} | {r['kl_mean_ablation']:.3f} |")
  paths = {"md": os.path.join(tables_dir, "fidelity.md"),
           "csv": os.path.join(tables_dir, "fidelity.csv")}
  _atomic_write(paths["md"], "\n".join(md) + "\n")
  lines = [",".join(("method",) + keys)]
  lines += [",".join([r["method"]] + [str(r[k]) for k in keys]) for r in rows]
  _atomic_write(paths["csv"], "\n".join(lines) + "\n")
  return paths


def _atomic_write(path: str, text: str) -> None:
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
  try:
    with os.fdopen(fd, "w") as fh:
      fh.write(text)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def run(config, workdir: str, log=print) -> dict:
  """Stores, the experiments grid, then the fidelity table."""
  from csae_jax.evaluation import experiments as ex
  model = ed.load_efficientnet()
  f = config.fidelity
  train_path = build_store(model, f, "train", os.path.join(workdir, "data", "train"))
  eval_path = build_store(model, f, "eval", os.path.join(workdir, "data", "eval"))
  config.data.path, config.data.eval_path = train_path, eval_path
  result = ex.run_experiment(config, workdir)
  images, _ = split_images(f, "eval")
  fmap, clean = ed.layer_output(model, f.layer, images)
  tokens, _ = ed.fmap_tokens(fmap)
  methods = list(dict.fromkeys(ex._split(config.methods) + ex._split(config.ablations)))
  rows = method_fidelity(config, workdir, model, images, clean.numpy(), tokens.mean(0), methods,
                         train_path, tokens.shape[1])
  result["fidelity"] = rows
  result["tables"]["fidelity"] = write_tables(os.path.join(workdir, "tables"), rows, config)
  for r in rows:
    log(f"{r['display']:>14}: top-1 agreement {r['top1_agreement']:.3f}, KL {r['kl']:.4f}, "
        f"KL recovered {r['kl_recovered']:.3f}")
  return result


def _define_flags() -> None:
  """Flags exist only when this module is the program (importing it defines none)."""
  flags.DEFINE_string("workdir", None, "Experiment directory (stores, runs, results, tables).")
  flags.DEFINE_string("methods", None, "Comma list of Table-1 methods (default: the config's).")
  flags.DEFINE_string("ablations", None, "Comma list of ablations (default: the config's).")
  flags.DEFINE_integer("steps", None, "Training steps of every run (default: the config's).")
  flags.DEFINE_string("layer", None, "EfficientNet module to splice (default: the config's).")
  flags.mark_flags_as_required(["workdir"])


def main(argv) -> None:
  del argv
  f = flags.FLAGS
  c = default_config()
  if f.methods is not None:
    c.methods = f.methods
  if f.ablations is not None:
    c.ablations = f.ablations
  if f.steps:
    c.steps = c.checkpoint_every = f.steps
  if f.layer:
    c.fidelity.layer = f.layer
  torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
  run(c, f.workdir)


def cli() -> None:
  """Console-script entry point (csae-fidelity)."""
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  cli()
