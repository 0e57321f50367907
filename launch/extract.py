"""Extract MLLM activations (and reference embeddings) into an activation store.

Paper setting, Qwen3-VL-4B vision block 23 on ImageNet train (50 per class), one GPU:
  python -m launch.extract --model=Qwen/Qwen3-VL-4B-Instruct --source=folder:/data/imagenet/train \
      --paper_split=imagenet:train --resize=256 --dtype=bfloat16 --device=cuda \
      --embedding_backbone=hf:facebook/dinov2-base --out=stores/qwen3vl_imagenet_train
Gemma-3 (vision layer 26) and LLaVA-1.5 (language layer 39, image tokens only) are picked from
the model's config.json; --layer changes the layer, --module hooks any module path (--family=generic
for unregistered models, with --stage and --token_rule).

Offline demo (tiny random-weight model, procedural images, EfficientNet-lite0 embeddings):
  python -m launch.extract --build_tiny=qwen3_vl --model=/tmp/tiny_qwen3_vl \
      --source=procedural:8 --embedding_backbone=efficientnet_lite0 --out=/tmp/demo_store

Rerunning an interrupted command resumes at the first unfinished chunk (--noresume starts over
only with --overwrite). SLURM array: each task runs with --num_shards=N (the shard index comes
from SLURM_ARRAY_TASK_ID, or --shard_index), then one `--combine --num_shards=N` joins them.
Import the authors' HDF5 files: --import_hdf5=acts.h5 [--hdf5_layer=23] --out=stores/theirs.
"""
from __future__ import annotations

import os
import sys


from absl import app
from absl import flags
from absl import logging

from launch import common

_MODEL = flags.DEFINE_string("model", None, "Model id or local directory (from_pretrained).")
_FAMILY = flags.DEFINE_enum("family", None, ["qwen3_vl", "gemma3", "llava", "generic"],
                            "Model family (default: from config.json's model_type).")
_MODULE = flags.DEFINE_string("module", None, "Module path to hook (overrides --layer).")
_LAYER = flags.DEFINE_integer("layer", None, "Layer index in the family's hook template "
                              "(default: the paper's layer).")
_TOKEN_RULE = flags.DEFINE_enum("token_rule", None, ["all", "image_tokens", "all_but_first"],
                                "Tokens to keep (default: the family's rule).")
_STAGE = flags.DEFINE_enum("stage", None, ["vision", "language"],
                           "vision: run only the vision tower; language: the full forward with "
                           "the prompt (default: the family's).")
_PROMPT = flags.DEFINE_string("prompt", None, "Prompt (default: the paper's).")
_RANK = flags.DEFINE_integer("hooked_rank", None, "Rank of the hooked output: 3 = [batch, seq, d], "
                             "2 = [tokens of all images, d] (default: the family's).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16", "float16"],
                           "Model compute dtype.")
_STORE_DTYPE = flags.DEFINE_enum("store_dtype", None, ["float32", "bfloat16", "float16"],
                                 "Stored activation dtype (default: --dtype).")
_DEVICE = flags.DEFINE_string("device", "cpu", "cpu or cuda[:i].")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Images per forward pass.")
_CHUNK = flags.DEFINE_integer("chunk_tokens", 8192, "Store chunk size in tokens.")
_SOURCE = flags.DEFINE_string("source", None, "folder:<root> | tfds:<name>:<split> | "
                              "procedural[:<n_per_class>]")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir.")
_RESIZE = flags.DEFINE_integer("resize", None, "Resize images to NxN first (paper: 256 for "
                               "Qwen3-VL).")
_SAMPLER = flags.DEFINE_enum("sampler", "all", ["all", "per_class", "fraction"], "Image sampler.")
_PER_CLASS = flags.DEFINE_integer("per_class", 0, "Images per class (sampler=per_class).")
_PER_CLASS_OFFSET = flags.DEFINE_integer("per_class_offset", 0, "Skip this many of each class's "
                                         "random order (a disjoint second draw).")
_FRACTION = flags.DEFINE_float("fraction", 0.8, "Split fraction (sampler=fraction).")
_PART = flags.DEFINE_enum("part", "first", ["first", "rest"], "Which side of the fraction split.")
_SEED = flags.DEFINE_integer("sampler_seed", 0, "Sampler seed.")
_PAPER_SPLIT = flags.DEFINE_string("paper_split", None, "<dataset>:<split> (color, imagenet, "
                                   "inaturalist, coco : train, test): the paper's sampler.")
_EMB = flags.DEFINE_string("embedding_backbone", None, "efficientnet_lite0 | hf:<model id> "
                           "(reference embeddings for HMS).")
_OUT = flags.DEFINE_string("out", None, "Output store directory.")
_SPLIT = flags.DEFINE_string("split", None, "Split name recorded in the manifest.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing store / partial run.")
_RESUME = flags.DEFINE_bool("resume", True, "Resume an interrupted run.")
_STRICT = flags.DEFINE_bool("strict", False, "Fail on unreadable images instead of skipping.")
_SHARD = flags.DEFINE_integer("shard_index", None, "Shard index (default: SLURM_ARRAY_TASK_ID).")
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 1, "Number of shards.")
_COMBINE = flags.DEFINE_bool("combine", False, "Combine the finished shards of --out and exit.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Progress bar / log lines with images/s and ETA.")
_BUILD_TINY = flags.DEFINE_enum("build_tiny", None, ["qwen3_vl", "gemma3", "llava"],
                                "Build a tiny random-weight model of this family at --model first.")
_HDF5 = flags.DEFINE_string("import_hdf5", None, "Import this HDF5 file (group X + token_offsets).")
_HDF5_LAYER = flags.DEFINE_string("hdf5_layer", None, "Dataset name inside X to import.")


def _shard_index() -> int:
  if _SHARD.value is not None:
    return _SHARD.value
  env = os.environ.get("SLURM_ARRAY_TASK_ID")
  if _NUM_SHARDS.value > 1 and env is None:
    raise app.UsageError("--num_shards > 1 needs --shard_index (or SLURM_ARRAY_TASK_ID)")
  offset = int(os.environ.get("SLURM_ARRAY_TASK_MIN", "0")) if env is not None else 0
  return int(env) - offset if env is not None else 0


def main(argv):
  from csae_jax import cli
  try:
    with cli.user_errors_exit("extract"):
      _main(argv)
  except ImportError as e:   # a missing optional package (h5py, a backbone): one line too
    print(f"extract: {cli.one_line(e)}", file=sys.stderr)
    sys.exit(cli.EXIT_USER_ERROR)


def _main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _OUT.value:
    raise app.UsageError("--out is required")
  from csae_jax import store as store_lib
  if _HDF5.value:
    from extract_torch.hdf5_import import import_hdf5
    path = import_hdf5(_HDF5.value, _OUT.value, layer=_HDF5_LAYER.value, dtype=_STORE_DTYPE.value,
                       chunk_tokens=_CHUNK.value, model=_MODEL.value, split=_SPLIT.value,
                       overwrite=_OVERWRITE.value)
    logging.info("imported %s into %s", _HDF5.value, path)
    print(store_lib.ActivationStore.open(path, verify=True))
    return
  from extract_torch import pipeline
  if _COMBINE.value:
    path = pipeline.combine_shards(_OUT.value, _NUM_SHARDS.value, overwrite=_OVERWRITE.value)
    print(store_lib.ActivationStore.open(path, verify=True))
    return
  if not _MODEL.value or not _SOURCE.value:
    raise app.UsageError("--model and --source are required")
  common.announce_torch("extract", _DEVICE.value)
  if _BUILD_TINY.value:
    from extract_torch.tiny_models import build_tiny
    if not os.path.isdir(_MODEL.value):
      build_tiny(_BUILD_TINY.value, _MODEL.value)
  from extract_torch import samplers, sources
  source = sources.make_source(_SOURCE.value, data_dir=_DATA_DIR.value, resize=_RESIZE.value)
  if _PAPER_SPLIT.value:
    dataset, _, split = _PAPER_SPLIT.value.partition(":")
    sampler_info = samplers.paper_split(dataset, split)
  else:
    sampler_info = {"sampler": _SAMPLER.value}
    if _SAMPLER.value == "per_class":
      sampler_info.update(per_class=_PER_CLASS.value, offset=_PER_CLASS_OFFSET.value)
    elif _SAMPLER.value == "fraction":
      sampler_info.update(fraction=_FRACTION.value, part=_PART.value)
  sampler_info["seed"] = _SEED.value
  positions = samplers.sample(source.labels, **sampler_info)
  cfg = pipeline.ExtractConfig(
      model=_MODEL.value, out=_OUT.value, family=_FAMILY.value, module=_MODULE.value,
      layer=_LAYER.value, token_rule=_TOKEN_RULE.value, stage=_STAGE.value, prompt=_PROMPT.value,
      dtype=_DTYPE.value, store_dtype=_STORE_DTYPE.value, device=_DEVICE.value,
      batch_size=_BATCH.value, chunk_tokens=_CHUNK.value, embedding_backbone=_EMB.value,
      strict=_STRICT.value, overwrite=_OVERWRITE.value, resume=_RESUME.value,
      shard_index=_shard_index(), num_shards=_NUM_SHARDS.value,
      split=_SPLIT.value or (_PAPER_SPLIT.value or "").partition(":")[2] or None,
      progress=_PROGRESS.value, hooked_rank=_RANK.value)
  logging.info("extracting %d images from %s with %s", len(positions), source.name, cfg.model)
  result = pipeline.extract(cfg, source, positions, sampler_info=sampler_info)
  logging.info("wrote %s: %d images, %d tokens, %d skipped, %.1f s (resumed at %d)", result.path,
               result.num_images, result.num_tokens, len(result.skipped), result.seconds,
               result.resumed_from)
  print(f"store: {result.path} images={result.num_images} tokens={result.num_tokens} "
        f"skipped={len(result.skipped)}")


def cli():
  """Console-script entry point (csae-extract, setup.py)."""
  app.run(main)


if __name__ == "__main__":
  cli()
