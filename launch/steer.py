"""Concept insertion / suppression with Level-2 clusters (SPEC 5; the paper's Table 3).

  python -m launch.steer --config=configs/steer_qwen3vl.py --workdir=runs/csae \
      --config.train_store=stores/qwen3vl_coco_train \
      --config.model_path=Qwen/Qwen3-VL-4B-Instruct --config.images=data/coco_heldout \
      --config.out_dir=steer/qwen3vl_coco

Reads a trained run (--workdir, as for launch.train; exported with its input scale folded in) or a
native export (--config.export), picks Level-2 clusters, computes sigma_A on the training store,
attaches the hook at the module the SAE was trained on (checking the width before any
generation), captions the held-out images for each arm and writes table3.csv,
table3_per_cluster.csv and captions.csv. The model path and family default to the store's.
"""
from __future__ import annotations

import os


from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from launch import common

_CONFIG = config_flags.DEFINE_config_file("config", None, "Steering config (configs/steer_*.py).",
                                          lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", "", "A trained run directory (what launch.train wrote); "
                                "or give a native export with --config.export.")
flags.mark_flags_as_required(["config"])

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def list_images(spec: str) -> list[str]:
  """A folder of images (sorted, recursive) or a text file with one path per line."""
  if not spec:
    raise ValueError("config.images is empty: give a folder of held-out images or a .txt list")
  if os.path.isdir(spec):
    out = []
    for root, _, files in os.walk(spec):
      out += [os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_EXTS)]
    out.sort()
  elif os.path.isfile(spec):
    base = os.path.dirname(os.path.abspath(spec))
    with open(spec) as f:
      out = [l.strip() if os.path.isabs(l.strip()) else os.path.join(base, l.strip())
             for l in f if l.strip()]
    missing = [p for p in out if not os.path.isfile(p)]
    if missing:
      raise FileNotFoundError(f"{len(missing)} listed images do not exist, first: {missing[0]}")
  else:
    raise FileNotFoundError(f"config.images={spec!r} is neither a folder nor a list file")
  if not out:
    raise ValueError(f"no images ({', '.join(IMAGE_EXTS)}) found in {spec}")
  return out


def _steer_config(c):
  from bridge_torch.experiment import SteerConfig
  s = dict(c.steer)
  s["clusters"] = tuple(int(u) for u in (s.get("clusters") or ()))
  s["concepts"] = {int(k): str(v) for k, v in dict(s.get("concepts") or {}).items()}
  return SteerConfig(**s)


def resolve_export(c, out_dir: str, workdir: str = "") -> str:
  if bool(c.export) == bool(workdir):
    raise ValueError("give exactly one of --config.export (a native export) and --workdir "
                     "(a trained run)")
  if c.export:
    return c.export
  from csae_jax import export
  path = os.path.join(out_dir, "export")
  if os.path.exists(path) and not c.overwrite:
    logging.info("reusing the export in %s", path)
    return path
  return str(export.export_run(workdir, path, overwrite=bool(c.overwrite)))


def run(c, workdir: str = "", log=logging.info) -> dict[str, str]:
  """The whole experiment for config `c` on the trained run `workdir` (or c.export); returns the
  paths of the CSV files."""
  from PIL import Image

  from bridge_torch import experiment, judges, steering
  from bridge_torch import sae as tsae
  from bridge_torch.captioning import HFCaptioner
  from csae_jax.store import ActivationStore
  from extract_torch import registry

  if not c.out_dir:
    raise ValueError("config.out_dir is empty")
  os.makedirs(c.out_dir, exist_ok=True)
  if os.path.exists(os.path.join(c.out_dir, "table3.csv")) and not c.overwrite:
    raise FileExistsError(f"{c.out_dir} already holds table3.csv; set config.overwrite=True")
  scfg = _steer_config(c)
  image_paths = list_images(c.images)           # fail on bad inputs before loading anything big
  judge = judges.make_judge(c.judge.name, threshold=c.judge.get("threshold"),
                            url=c.judge.get("url") or None, key=c.judge.get("key") or None,
                            model=c.judge.get("model") or None)
  ex = tsae.load_export(resolve_export(c, c.out_dir, workdir))
  mat = tsae.load_export(c.matryoshka_export).level1 if c.matryoshka_export else None
  store = ActivationStore.open(c.train_store)
  if store.d != ex.d:
    raise steering.WidthMismatch(f"training store {c.train_store} has d={store.d}, the export "
                                 f"d={ex.d}")
  log(f"export: {len(ex.levels)} levels, d={ex.d}; store: {store.num_images} images")
  plans = experiment.plan_clusters(ex, store.read_tokens, store.token_offsets, scfg,
                                   labels=store.labels, label_names=store.label_names,
                                   matryoshka=mat)
  for p in plans:
    log(f"cluster {p.unit}: {len(p.arms.cluster)} atoms, sigma_A={p.sigma:.4g}, "
        f"concept={p.concept.name!r}")

  # the model the store was extracted from, unless the config names one
  family = registry.get_family(c.model_family or store.manifest.get("family") or "qwen3_vl")
  model_path = c.model_path or store.manifest.get("model")
  if not model_path:
    raise ValueError(f"config.model_path is empty and {c.train_store} names no model")
  module = c.module or ex.hooked_module or family.hook_path()
  log(f"model {model_path} ({family.name}), hook {module}")
  model = registry.load_model(family, model_path, dtype=c.dtype, device=c.device)
  processor = registry.load_processor(family, model_path)
  captioner = HFCaptioner(model, processor, family, prompt=c.prompt,
                          max_new_tokens=c.max_new_tokens)
  images = [Image.open(p).convert("RGB") for p in image_paths]
  ids = [os.path.relpath(p, c.images) if os.path.isdir(c.images) else p for p in image_paths]
  mask_fn = captioner.token_mask_fn if family.token_rule == "image_tokens" else None
  hook = steering.SteeringHook(ex.level1, mode=c.mode, token_mask_fn=mask_fn)
  hook.attach(model, module, run_forward=captioner.probe(images[0]))   # width check first
  mhook = None
  if mat is not None:
    mhook = steering.SteeringHook(mat, mode=c.mode, token_mask_fn=mask_fn)
    mhook.attach(model, module, run_forward=captioner.probe(images[0]))
  try:
    table, per_cluster, captions = experiment.run_experiment(
        plans, captioner.caption, images, ids, hook, judge, scfg, mhook, log=log)
  finally:
    hook.detach()
    if mhook is not None:
      mhook.detach()
  paths = experiment.write_outputs(c.out_dir, table, per_cluster, captions)
  log("Table 3 (" + judge.name + " judge)\n" + experiment.format_table(table))
  return paths


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.announce_jax("steer")
  from csae_jax.trainer import metrics as metrics_lib
  metrics_lib.quiet_library_logs()    # orbax / jax INFO lines would bury the steering log
  paths = run(_CONFIG.value, _WORKDIR.value)
  logging.info("wrote %s", paths)


def cli():
  """Console-script entry point (csae-steer, setup.py)."""
  app.run(main)


if __name__ == "__main__":
  cli()
