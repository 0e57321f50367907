"""launch/steer.py end to end on a tiny random Qwen3-VL: store -> trained CSAE -> Table 3 + CSVs.

Captions of a random model are gibberish; this checks the pipeline, the shapes of the tables and
that every judged flag is what the judge says about the written caption.
"""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from tests.bridge_torch.steer_helpers import random_flat

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220),
          "yellow": (230, 220, 30)}


def _image(rgb, seed):
  rng = np.random.default_rng(seed)
  arr = np.clip(np.array(rgb)[None, None] + rng.normal(0, 25, (32, 32, 3)), 0, 255)
  return Image.fromarray(arr.astype(np.uint8))


@pytest.mark.slow
def test_steer_launch_end_to_end(tmp_path):
  from launch import steer as launch_steer
  from configs import steer_qwen3vl
  from bridge_torch.judges import Concept, WordListJudge
  from csae_jax import export
  from csae_jax.store import write_store
  from csae_jax.trainer import train
  from csae_jax.trainer.config import base_config
  from extract_torch import registry, tiny_models

  model_path = tiny_models.build_tiny("qwen3_vl", tmp_path / "qwen")
  family = registry.get_family("qwen3_vl")
  model = registry.load_model(family, model_path)
  processor = registry.load_processor(family, model_path)
  module = family.hook_path()
  text = registry.build_prompt(processor, family.prompt)

  # training activations at the hook, one forward per image (what extraction stores)
  names = list(COLORS)
  acts, offsets, labels = [], [0], []
  grabbed = []
  h = registry.resolve_module(model, module).register_forward_hook(
      lambda m, i, o: grabbed.append(registry.hooked_tensor(o, module, family.hooked_rank)))
  with torch.no_grad():
    for i in range(32):
      lab = i % len(names)
      model(**processor(images=[_image(COLORS[names[lab]], i)], text=[text], return_tensors="pt"))
      a = grabbed.pop()
      a = a.reshape(-1, a.shape[-1]).numpy()
      acts.append(a)
      offsets.append(offsets[-1] + len(a))
      labels.append(lab)
  h.remove()
  store = write_store(str(tmp_path / "train_store"), np.concatenate(acts), np.array(offsets),
                      labels=np.array(labels), label_names=names, hooked_module=module,
                      model="tiny-qwen3-vl", split="train")

  c = base_config()
  c.model.name = "cascade"
  c.model.d = 32
  c.model.levels = [dict(family="batchtopk", n=48, k=4, aux_k=None, threshold_start=5),
                    dict(family="batchtopk", n=6, k=1, aux_k=None, threshold_start=5)]
  c.model.cascade = dict(k_anneal_frac=0.0)
  c.steps, c.batch_size, c.lr, c.warmup_steps = 40, 64, 3e-3, 5
  c.checkpoint_every, c.keep, c.log_every = 40, 1, 40
  c.data.kind = "store"
  c.data.path = store
  workdir = str(tmp_path / "run")
  train(c, workdir)

  heldout = tmp_path / "heldout"
  heldout.mkdir()
  for i in range(6):
    _image(COLORS[names[i % 4]], 100 + i).save(heldout / f"img{i}.png")
  mm, mp, ms = random_flat("matryoshka", d=32, n=40)
  mat = export.export_model(tmp_path / "mat", mm, mp, ms, hooked_module=module)

  cfg = steer_qwen3vl.get_config()
  cfg.train_store = store
  cfg.matryoshka_export = str(mat)
  cfg.images = str(heldout)
  cfg.model_path = model_path
  cfg.max_new_tokens = 4
  cfg.steer.num_clusters = 2
  cfg.steer.insert_images = 3
  cfg.steer.min_children = 2
  cfg.out_dir = str(tmp_path / "out")
  paths = launch_steer.run(cfg, workdir, log=lambda s: None)

  exp = export.read_export_files(tmp_path / "out" / "export")[0]
  assert exp["hooked_module"] == module and exp["input_scale_folded"] > 0
  with open(paths["table3"]) as f:
    table = list(csv.DictReader(f))
  assert [r["arm"] for r in table] == ["baseline", "rand1", "best_child", "cluster", "matryoshka"]
  n_clusters = len({r["unit"] for r in csv.DictReader(open(paths["per_cluster"]))})
  assert 1 <= n_clusters <= 2
  for r in table:
    assert int(r["n_insert"]) == 3 * n_clusters
    appeared = float(r["appeared_pct"])
    assert 0.0 <= appeared <= 100.0
  base = table[0]
  assert int(base["n_suppress"]) == 0 or float(base["removed_pct"]) == 0.0
  with open(paths["captions"]) as f:
    caps = list(csv.DictReader(f))
  judge = WordListJudge()
  per_unit = {}
  for r in caps:
    assert r["judged"] == str(judge.judge([r["caption"]], Concept.from_label(r["concept"]))[0])
    per_unit.setdefault(r["unit"], []).append(r)
  for rows in per_unit.values():
    n_sup = sum(1 for r in rows if r["direction"] == "suppress" and r["arm"] == "cluster")
    assert len(rows) == 3 + 4 * (3 + n_sup)    # baseline inserts + 4 arms x (insert + suppress)
  base_caps = {(r["unit"], r["image_id"]): r["caption"] for r in caps if r["arm"] == "baseline"}
  steered = [r for r in caps if r["arm"] == "cluster" and r["direction"] == "insert"]
  assert any(r["caption"] != base_caps[(r["unit"], r["image_id"])] for r in steered)
  with pytest.raises(FileExistsError, match="overwrite"):
    launch_steer.run(cfg, workdir, log=lambda s: None)
