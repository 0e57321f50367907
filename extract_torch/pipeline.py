"""The extraction stage: images -> hooked MLLM activations (+ reference embeddings) -> store.

One pass over a (sampled, sharded) list of source positions in fixed batches:
  loader thread: decode images (unreadable ones are skipped and listed, or raise under strict)
  main thread:   forward pass with a hook at the module path (stopping the forward right after
                 it), keep tokens per the token rule (SPEC section 6), reference embeddings
  writer thread: chunks to the store (csae_jax.store.StoreWriter), progress committed per chunk
Batches are aligned to fixed positions, so a resumed run or a set of shards sees exactly the
batches of one uninterrupted run and writes the same bytes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import queue
import sys
import threading
import time
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from csae_jax import store as store_lib
from extract_torch import registry
from extract_torch.sources import ImageLoadError, Source


class ExtractionError(ValueError):
  """A problem with the extraction inputs (images under --strict, configuration)."""


class _StopForward(Exception):
  """Raised by the hook to skip the layers after the hooked one."""


@dataclasses.dataclass
class ExtractConfig:
  model: str                              # model id or local path (from_pretrained)
  out: str                                # store directory
  family: str | None = None               # registry family; None: from config.json model_type
  module: str | None = None               # hook path; None: the family's template at `layer`
  layer: int | None = None                # None: the family's paper layer
  token_rule: str | None = None           # None: the family's rule
  stage: str | None = None                # None: the family's stage
  prompt: str | None = None               # None: the paper prompt
  dtype: str = "float32"                  # model compute dtype
  store_dtype: str | None = None          # None: same as dtype
  device: str = "cpu"
  batch_size: int = 8
  chunk_tokens: int = store_lib.DEFAULT_CHUNK_TOKENS
  embedding_backbone: str | None = None   # e.g. "efficientnet_lite0", "hf:facebook/dinov2-base"
  strict: bool = False                    # unreadable image -> error instead of skip
  overwrite: bool = False
  resume: bool = True
  shard_index: int = 0
  num_shards: int = 1
  split: str | None = None
  progress: bool = True
  early_exit: bool = True                 # stop the forward pass after the hooked module
  hooked_rank: int | None = None          # None: the family's (generic: 3); 2 = [tokens, d]

  def validate(self):
    if self.batch_size <= 0:
      raise ValueError(f"batch_size must be positive, got {self.batch_size}")
    if self.dtype not in registry.TORCH_DTYPES:
      raise ValueError(f"dtype must be one of {sorted(registry.TORCH_DTYPES)}, got {self.dtype!r}")
    sd = self.store_dtype or self.dtype
    if sd not in store_lib.DTYPES:
      raise ValueError(f"store_dtype must be one of {sorted(store_lib.DTYPES)}, got {sd!r}")
    if self.token_rule is not None and self.token_rule not in registry.TOKEN_RULES:
      raise ValueError(f"token_rule must be one of {registry.TOKEN_RULES}, got {self.token_rule!r}")
    if self.stage is not None and self.stage not in registry.STAGES:
      raise ValueError(f"stage must be one of {registry.STAGES}, got {self.stage!r}")
    if not (self.device == "cpu" or self.device.startswith("cuda")):
      raise ValueError(f"device must be cpu or cuda[:i], got {self.device!r}")
    if self.num_shards <= 0 or not 0 <= self.shard_index < self.num_shards:
      raise ValueError(f"need 0 <= shard_index < num_shards, got {self.shard_index}/{self.num_shards}")


def shard_path(out: str, shard_index: int, num_shards: int) -> str:
  if num_shards == 1:
    return os.fspath(out)
  return f"{os.fspath(out)}.shard-{shard_index:05d}-of-{num_shards:05d}"


# ----------------------------------------------------------------------------- the hooked model
class HookedModel:
  """A loaded MLLM with a forward hook at one module; `__call__(images)` returns the kept
  tokens of each image, concatenated, and the count per image."""

  def __init__(self, model, processor, family: registry.Family, module_path: str,
               token_rule: str, stage: str, prompt: str, device: str, early_exit: bool = True,
               hooked_rank: int | None = None):
    self.model, self.processor, self.family = model, processor, family
    self.module_path, self.token_rule, self.stage = module_path, token_rule, stage
    self.prompt, self.device, self.early_exit = prompt, device, early_exit
    self.module = registry.resolve_module(model, module_path)
    self.expected_rank = hooked_rank or family.hooked_rank
    if self.expected_rank not in (2, 3):
      raise ExtractionError(f"hooked_rank must be 2 ([tokens, d]) or 3 ([batch, seq, d]), got "
                            f"{self.expected_rank}")
    self._captured = None
    self._handle = self.module.register_forward_hook(self._hook)
    self.model_dtype = next(model.parameters()).dtype
    if token_rule == "image_tokens":
      if stage != "language":
        raise ExtractionError("token_rule 'image_tokens' selects image placeholder positions in "
                              "a language layer; use --stage=language (or token_rule 'all')")
      self.image_token_id = registry.image_token_id(model, processor)
    if stage == "language":
      self.text = registry.build_prompt(processor, prompt)
      tok = getattr(processor, "tokenizer", None)
      if tok is not None:
        tok.padding_side = "right"   # real tokens keep their positions (causal LM + right pad)

  def close(self):
    """Remove the hook (the model can be reused unhooked)."""
    self._handle.remove()

  def _hook(self, module, inputs, output):
    if self._captured is None:         # first call only (a module may be reused)
      self._captured = registry.hooked_tensor(output, self.module_path, self.expected_rank)
      if self.early_exit:
        raise _StopForward()

  def _run(self, fn):
    self._captured = None
    with torch.inference_mode():
      try:
        fn()
      except _StopForward:
        pass
    if self._captured is None:
      raise ExtractionError(f"the module {self.module_path!r} was not called by the "
                            f"{self.stage} forward pass; is the stage right?")
    return self._captured

  def _to_device(self, inputs: dict) -> dict:
    out = {}
    for k, v in inputs.items():
      if isinstance(v, torch.Tensor):
        v = v.to(self.device)
        if v.is_floating_point():
          v = v.to(self.model_dtype)
      out[k] = v
    return out

  def __call__(self, images: Sequence[Image.Image]):
    """-> (float32 [sum(counts), d], counts int64 [B], processor counts int64 [B])."""
    if self.stage == "vision":
      return self._vision(images)
    return self._language(images)

  def _vision(self, images):
    ip = self.processor.image_processor(images=list(images), return_tensors="pt")
    inputs = {"pixel_values": ip["pixel_values"]}
    if "image_grid_thw" in ip:
      inputs["image_grid_thw"] = ip["image_grid_thw"]
    inputs = self._to_device(inputs)
    fn = getattr(self.model, "get_image_features", None)
    h = self._run(lambda: fn(**inputs) if fn is not None else self.model(**inputs))
    b = len(images)
    if h.dim() == 2:                         # [patches of all images, d] (Qwen-VL style)
      if "image_grid_thw" not in ip:
        raise ExtractionError(f"{self.module_path!r} gave [tokens, d] but the processor gives "
                              f"no image_grid_thw to split it per image")
      counts = ip["image_grid_thw"].prod(-1).to(torch.int64)
      if int(counts.sum()) != h.shape[0]:
        raise ExtractionError(f"hooked output has {h.shape[0]} rows but the processor's grids "
                              f"give {int(counts.sum())} patches")
      per_image = list(torch.split(h, counts.tolist()))
      proc_counts = counts.numpy()
    else:                                    # [B, S, d]
      if h.shape[0] != b:
        raise ExtractionError(f"hooked output batch {h.shape[0]} != {b} images")
      per_image = list(h)
      pv = ip["pixel_values"]
      patch = _patch_size(self.model)
      proc_counts = np.full(b, (pv.shape[-2] // patch) * (pv.shape[-1] // patch)
                            if patch and pv.dim() == 4 else h.shape[1], np.int64)
    return self._keep(per_image, proc_counts)

  def _language(self, images):
    inputs = self.processor(text=[self.text] * len(images), images=[[im] for im in images],
                            return_tensors="pt", padding=True)
    ids = inputs["input_ids"]
    dev_inputs = self._to_device(dict(inputs))
    h = self._run(lambda: self.model(**dev_inputs))
    if h.shape[:2] != ids.shape:
      raise ExtractionError(f"hooked output {tuple(h.shape)} does not match the token ids "
                            f"{tuple(ids.shape)}")
    if self.token_rule == "image_tokens":
      mask = ids == self.image_token_id
    else:
      mask = inputs["attention_mask"].bool()
    proc_counts = mask.sum(1).numpy().astype(np.int64)
    mask = mask.to(h.device)
    per_image = [h[i][mask[i]] for i in range(h.shape[0])]
    if self.token_rule == "all_but_first":
      per_image = [x[1:] for x in per_image]
      proc_counts = proc_counts - 1
    return self._gather(per_image, proc_counts)

  def _keep(self, per_image, proc_counts):
    if self.token_rule == "all_but_first":
      per_image = [x[1:] for x in per_image]
    elif self.token_rule == "image_tokens":
      raise ExtractionError("token_rule 'image_tokens' needs a language-stage hook")
    return self._gather(per_image, proc_counts)

  @staticmethod
  def _gather(per_image, proc_counts):
    counts = np.array([x.shape[0] for x in per_image], np.int64)
    acts = torch.cat(per_image).float().cpu().numpy() if per_image else None
    return acts, counts, np.asarray(proc_counts, np.int64)


def _patch_size(model) -> int | None:
  vc = getattr(model.config, "vision_config", None)
  p = getattr(vc, "patch_size", None) if vc is not None else getattr(model.config, "patch_size", None)
  return int(p) if isinstance(p, int) else None


def load_hooked_model(cfg: ExtractConfig) -> HookedModel:
  family_name = cfg.family or registry.detect_family(cfg.model)
  family = registry.get_family(family_name)
  if family.name == "generic" and not cfg.module:
    raise ExtractionError(f"{cfg.model!r} is not a registered family ({sorted(registry.FAMILIES)});"
                          f" give --module=<module path> (and --stage, --token_rule)")
  if cfg.module and cfg.layer is not None:
    raise ExtractionError("give either --module or --layer, not both")
  path = cfg.module or family.hook_path(cfg.layer)
  model = _load_model(family, cfg)
  processor = registry.load_processor(family, cfg.model)
  return HookedModel(model, processor, family, path, cfg.token_rule or family.token_rule,
                     cfg.stage or family.stage, cfg.prompt or family.prompt, cfg.device,
                     cfg.early_exit, cfg.hooked_rank)


def _load_model(family, cfg):
  if family.name != "generic":
    return registry.load_model(family, cfg.model, cfg.dtype, cfg.device)
  for cls_name in ("AutoModelForImageTextToText", "AutoModel"):
    try:
      return registry.load_model(dataclasses.replace(family, model_class=cls_name), cfg.model,
                                 cfg.dtype, cfg.device)
    except ValueError as e:
      if "Unrecognized configuration class" not in str(e):
        raise
  raise ExtractionError(f"cannot load {cfg.model!r} with AutoModelForImageTextToText or AutoModel")


# ----------------------------------------------------------------------------- loading images
def _load_batches(source: Source, positions: np.ndarray, start: int, batch_size: int,
                  strict: bool, out_q: queue.Queue, stop: threading.Event):
  """Producer: (batch_start, batch_end, [(position, image)], [skipped records])."""
  try:
    for lo in range(start, len(positions), batch_size):
      hi = min(lo + batch_size, len(positions))
      good, bad = [], []
      for p in positions[lo:hi]:
        try:
          good.append((int(p), source.load(int(p))))
        except ImageLoadError as e:
          if strict:
            raise ExtractionError(f"{e} (run without --strict to skip and list it)") from e
          bad.append({"id": source.ids[int(p)], "position": int(p), "reason": str(e)})
      while not stop.is_set():
        try:
          out_q.put((lo, hi, good, bad), timeout=0.5)
          break
        except queue.Full:
          continue
      if stop.is_set():
        return
    out_q.put(None)
  except BaseException as e:
    out_q.put(e)


class Progress:
  """images/s and ETA: a tqdm bar when interactive, a log line every `every` s otherwise."""

  def __init__(self, total: int, initial: int, enabled: bool, every: float = 30.0):
    self.total, self.done, self.enabled, self.every = total, initial, enabled, every
    self.t0 = self.last = time.perf_counter()
    self.initial = initial
    self.bar = None
    if enabled and sys.stderr.isatty():
      from tqdm import tqdm
      self.bar = tqdm(total=total, initial=initial, unit="img", smoothing=0.1)

  def update(self, n: int):
    self.done += n
    if self.bar is not None:
      self.bar.update(n)
      return
    now = time.perf_counter()
    if self.enabled and (now - self.last >= self.every or self.done == self.total):
      self.last = now
      rate = (self.done - self.initial) / max(now - self.t0, 1e-9)
      eta = (self.total - self.done) / rate if rate > 0 else float("inf")
      print(f"extract: {self.done}/{self.total} images, {rate:.1f} images/s, ETA {eta:.0f} s",
            file=sys.stderr, flush=True)

  def close(self):
    if self.bar is not None:
      self.bar.close()


@dataclasses.dataclass
class ExtractResult:
  path: str
  num_images: int
  num_tokens: int
  skipped: list
  seconds: float
  compute_seconds: float
  write_blocked_seconds: float
  writer_thread_seconds: float
  resumed_from: int
  finalize_seconds: float = 0.0


def _shard_positions(cfg: ExtractConfig, source: Source, positions):
  """(all positions, this shard's positions, shard range [lo, hi)) after validating them."""
  from extract_torch import samplers
  positions = np.arange(len(source), dtype=np.int64) if positions is None else \
      np.asarray(positions, np.int64)
  if positions.ndim != 1 or (positions.size and (positions.min() < 0 or
                                                  positions.max() >= len(source))):
    raise ExtractionError(f"positions must be 1-D indices into the source of {len(source)} images")
  lo, hi = samplers.shard_range(len(positions), cfg.batch_size, cfg.shard_index, cfg.num_shards)
  return positions, positions[lo:hi], lo, hi


def _open_writer(cfg: ExtractConfig, source: Source, out: str, hooked: HookedModel, backbone,
                 d: int, positions: np.ndarray, shard_range: tuple[int, int],
                 sampler_info: dict | None) -> store_lib.StoreWriter:
  """The store writer with the run's fingerprint (must match on resume) and manifest extras."""
  lo, hi = shard_range
  store_dtype = cfg.store_dtype or cfg.dtype
  positions_sha = hashlib.sha256(positions.tobytes()).hexdigest()[:16]
  fingerprint = {"model": os.path.abspath(cfg.model) if os.path.exists(cfg.model) else cfg.model,
                 "module": hooked.module_path, "token_rule": hooked.token_rule,
                 "stage": hooked.stage, "prompt": hooked.prompt, "dtype": cfg.dtype,
                 "batch_size": cfg.batch_size, "source": source.fingerprint,
                 "positions": positions_sha, "shard": [cfg.shard_index, cfg.num_shards],
                 "embedding_backbone": getattr(backbone, "name", None)}
  extra = {"family": hooked.family.name, "token_rule": hooked.token_rule, "stage": hooked.stage,
           "prompt": hooked.prompt if hooked.stage == "language" else None,
           "model_dtype": cfg.dtype, "device": cfg.device, "batch_size": cfg.batch_size,
           "source": source.fingerprint, "sampler": sampler_info or {"positions": positions_sha},
           "num_source_positions": int(len(positions)),
           "shard": {"index": cfg.shard_index, "count": cfg.num_shards, "positions": [lo, hi]}}
  import transformers
  return store_lib.StoreWriter(
      out, d=d, dtype=store_dtype, chunk_tokens=cfg.chunk_tokens, model=cfg.model,
      hooked_module=hooked.module_path, split=cfg.split, label_names=source.label_names,
      embedding_dim=getattr(backbone, "dim", None), embedding_backbone=getattr(backbone, "name", None),
      manifest_extra=extra, fingerprint=fingerprint, overwrite=cfg.overwrite, resume=cfg.resume,
      versions={"torch": torch.__version__, "transformers": transformers.__version__})


def _stream(cfg: ExtractConfig, source: Source, mine: np.ndarray, start: int,
            hooked: HookedModel, backbone, d: int, writer: store_lib.StoreWriter):
  """Forward passes over mine[start:] into the writer, images loaded by a background thread.

  Returns (finalized store path, compute seconds). On any error the partial store is kept (the
  next run resumes it).
  """
  progress = Progress(len(mine), start, cfg.progress)
  q: queue.Queue = queue.Queue(maxsize=2)
  stop = threading.Event()
  loader = threading.Thread(target=_load_batches, daemon=True,
                            args=(source, mine, start, cfg.batch_size, cfg.strict, q, stop))
  loader.start()
  compute = 0.0
  try:
    while True:
      item = q.get()
      if item is None:
        break
      if isinstance(item, BaseException):
        raise item
      b_lo, b_hi, good, bad = item
      t0 = time.perf_counter()
      if good:
        acts, counts, _ = hooked([im for _, im in good])
        emb = backbone.embed([im for _, im in good]).astype(np.float32) if backbone else None
      else:
        acts, counts = np.zeros((0, d), np.float32), np.zeros(0, np.int64)
        emb = np.zeros((0, backbone.dim), np.float32) if backbone else None
      compute += time.perf_counter() - t0
      idx = [p for p, _ in good]
      writer.add_batch(acts, counts, source.labels[idx], [source.ids[p] for p in idx], emb,
                       skipped=bad, cursor=b_hi)
      progress.update(b_hi - b_lo)
    path = writer.finalize()
  except BaseException:
    stop.set()
    writer.close()            # keeps the partial store: the next run resumes it
    raise
  finally:
    progress.close()
  return path, compute


def extract(cfg: ExtractConfig, source: Source, positions=None, hooked: HookedModel | None = None,
            backbone=None, sampler_info: dict | None = None) -> ExtractResult:
  """Extract one shard (the whole list when num_shards == 1) into its store.

  positions: source positions to extract, in order (a sampler's output); default all.
  hooked/backbone: already loaded models (tests and benches reuse them).
  Phases: shard the positions -> load the models and probe d -> open (or resume) the writer ->
  stream the batches -> report.
  """
  cfg.validate()
  t_start = time.perf_counter()
  positions, mine, lo, hi = _shard_positions(cfg, source, positions)
  out = shard_path(cfg.out, cfg.shard_index, cfg.num_shards)
  if os.path.exists(out) and not cfg.overwrite:
    raise store_lib.StoreError(f"{out} already exists; pass --overwrite to replace it")
  if cfg.overwrite:   # refuse before the model is loaded
    store_lib.check_overwrite(out)

  hooked = hooked or load_hooked_model(cfg)
  if backbone is None and cfg.embedding_backbone:
    from extract_torch.embeddings import make_backbone
    backbone = make_backbone(cfg.embedding_backbone, cfg.device)
  # probe: checks the hook (rank, stage) and gives d before anything is written
  probe, _, _ = hooked([Image.new("RGB", (64, 64), (127, 127, 127))])
  d = int(probe.shape[1])

  writer = _open_writer(cfg, source, out, hooked, backbone, d, positions, (lo, hi), sampler_info)
  if writer.done:     # a previous run finished writing; only the rename was missing
    path = writer.finalize()
    st = store_lib.ActivationStore.open(path)
    return ExtractResult(path, st.num_images, st.num_tokens, st.manifest["skipped_images"],
                         time.perf_counter() - t_start, 0.0, 0.0, 0.0, len(mine))
  start = writer.resume_cursor
  if start % cfg.batch_size and start != len(mine):
    raise store_lib.StoreError(f"resume position {start} is not a batch boundary of batch_size "
                               f"{cfg.batch_size}; was the batch size changed?")
  path, compute = _stream(cfg, source, mine, start, hooked, backbone, d, writer)
  st = store_lib.ActivationStore.open(path)
  return ExtractResult(path, st.num_images, st.num_tokens, st.manifest["skipped_images"],
                       time.perf_counter() - t_start, compute, writer.blocked_seconds,
                       writer.write_seconds, start, writer.finalize_seconds)


def combine_shards(out: str, num_shards: int, overwrite: bool = False) -> str:
  """Combine the finished shard stores of `out` (in shard order) into `out`."""
  paths = [shard_path(out, k, num_shards) for k in range(num_shards)]
  missing = [p for p in paths if not os.path.isfile(os.path.join(p, store_lib.MANIFEST))]
  if missing:
    raise store_lib.StoreError(f"shards not finished: {missing}")
  for k, p in enumerate(paths):
    shard = store_lib.ActivationStore.open(p).manifest.get("shard", {})
    if shard.get("index") != k or shard.get("count") != num_shards:
      raise store_lib.StoreError(f"{p} is not shard {k} of {num_shards} (manifest says {shard})")
  return store_lib.combine_stores(paths, out, overwrite=overwrite)
