"""Bench: how much of an extraction run goes to writing the store (target: <= 10%).

  python -m bench.extract
  python -m bench.extract --family=qwen3_vl --image_size=256 --images=24

Runs the real pipeline (tiny random-weight model, procedural images, batches, hook, early exit,
store writer) and reports, per width d and store dtype, in one process on one machine. The
default (tiny Gemma-3 vision tower, 64 tokens per 32 px image) has the least compute per stored
token of the three families: the worst case for the writing share.
  write_blocked   time the extraction loop waited on the store (queue + finalize) / total
  finalize_s      of which the one-off finalize (tail chunk, small arrays, manifest, rename)
  writer_busy     time the background writer spent casting, hashing and writing / total
                  (overlapped with compute; the cost if writing were synchronous)
  MB/s            stored bytes / writer_busy
The model is loaded once, outside the timed region.
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
import time


from absl import app
from absl import flags

_FAMILY = flags.DEFINE_enum("family", "gemma3", ["qwen3_vl", "gemma3", "llava"], "Tiny family.")
_WIDTHS = flags.DEFINE_list("widths", ["32", "256"], "Hidden sizes d at the hooked layer.")
_DTYPES = flags.DEFINE_list("store_dtypes", ["float32", "bfloat16"], "Store dtypes.")
_IMAGES = flags.DEFINE_integer("images", 600, "Images per run.")
_SIZE = flags.DEFINE_integer("image_size", 32, "Image side (pixels; 256 = the paper's Qwen3-VL).")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Batch size.")
_CHUNK = flags.DEFINE_integer("chunk_tokens", 8192, "Store chunk size (tokens).")
_THREADS = flags.DEFINE_integer("torch_threads", 1, "torch intra-op threads (1: stable figures on "
                                "a shared 2-core machine; 0: torch's default).")


def main(argv):
  del argv
  import torch
  from csae_jax import store as store_lib
  from extract_torch import pipeline, sources, tiny_models
  if _THREADS.value:
    torch.set_num_threads(_THREADS.value)
  src = sources.procedural_source(-(-_IMAGES.value // 3), size=_SIZE.value)
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for width in map(int, _WIDTHS.value):
      model_dir = tiny_models.build_tiny(_FAMILY.value, os.path.join(tmp, f"m{width}"),
                                         width=width)
      hooked = pipeline.load_hooked_model(pipeline.ExtractConfig(model=model_dir, out=""))
      hooked([src.load(0)])                               # warm-up outside the timing
      for dtype in _DTYPES.value:
        cfg = pipeline.ExtractConfig(model=model_dir, out=os.path.join(tmp, f"s{width}{dtype}"),
                                     store_dtype=dtype, batch_size=_BATCH.value,
                                     chunk_tokens=_CHUNK.value, progress=False)
        t0 = time.perf_counter()
        res = pipeline.extract(cfg, src, hooked=hooked)
        total = time.perf_counter() - t0
        st = store_lib.ActivationStore.open(res.path)
        nbytes = st.num_tokens * st.d * store_lib.DTYPES[dtype].itemsize
        row = {"family": _FAMILY.value, "d": st.d, "store_dtype": dtype,
               "images": st.num_images, "tokens": st.num_tokens,
               "tokens_per_image": int(st.tokens_per_image[0]), "total_s": round(total, 3),
               "compute_s": round(res.compute_seconds, 3),
               "write_blocked_frac": round(res.write_blocked_seconds / total, 4),
               "finalize_s": round(res.finalize_seconds, 3),
               "writer_busy_frac": round(res.writer_thread_seconds / total, 4),
               "write_MB_per_s": round(nbytes / 1e6 / max(res.writer_thread_seconds, 1e-9), 1),
               "images_per_s": round(st.num_images / total, 2)}
        rows.append(row)
        print(json.dumps(row), flush=True)
      hooked.close()
  print(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "load_avg": os.getloadavg()}))
  worst = max(r["write_blocked_frac"] for r in rows)
  print(f"worst write-blocked fraction: {worst:.2%} (target <= 10%)")


if __name__ == "__main__":
  app.run(main)
