"""The training config: defaults, validation, and JSON round trips (interface 2 of the project).

A config is an ml_collections ConfigDict. `base_config()` holds every key `train` reads with its
default, so a config file only sets what it changes; `complete(config)` fills in what a hand-built
config leaves out and `validate` checks it before any data is read.
"""
from __future__ import annotations

import json
from typing import Any

import ml_collections
from ml_collections import config_dict

# Keys a resumed run may change without changing what it computes.
RUNTIME_KEYS = ("checkpoint_every", "keep", "log_every", "overwrite", "distributed", "progress",
                "data.prefetch", "data.verify", "data.host_cache_bytes", "data.device_resident",
                "data.device_max_bytes", "mesh")


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = ml_collections.ConfigDict()
  c.steps = 1000
  c.batch_size = 4096              # global batch, in tokens
  c.seed = 0
  c.lr = config_dict.placeholder(float)   # None: 2e-4 / sqrt(n / 2^14) (SPEC 1)
  c.warmup_steps = 1000
  c.decay_start_frac = 0.8
  c.clip_norm = 1.0
  c.checkpoint_every = 1000
  c.keep = 3
  c.log_every = 100
  c.overwrite = False              # True: delete a finished run in the workdir and start again
  c.progress = "auto"              # auto (a terminal) | always | never: the one-line progress

  c.data = ml_collections.ConfigDict()
  c.data.kind = "planted"          # planted | store
  c.data.path = ""                 # store directory (kind=store)
  c.data.split = ""                # expected manifest split ("" = any)
  c.data.verify = True             # check every chunk's checksum before training (store)
  c.data.host_cache_bytes = 8 << 30   # read the whole store into host RAM when it fits
  c.data.shuffle = "auto"          # auto | global | window: chunk windows for stores beyond RAM
  c.data.window_bytes = 1 << 30    # bytes of rows per shuffle window (shuffle=window)
  c.data.device_resident = False   # keep all tokens on every device; the step gathers its batch
  c.data.device_max_bytes = 4 << 30  # refuse device_resident above this many bytes per device
  c.data.prefetch = 2              # batches prepared ahead by a background thread
  c.data.input_scale = config_dict.placeholder(float)  # None: estimate once (SPEC 1)
  c.data.scale_batches = 100
  c.data.scale_max_tokens = 1 << 18
  c.data.planted = ml_collections.ConfigDict()

  c.mesh = ml_collections.ConfigDict()
  c.mesh.num_devices = -1          # -1: all devices; N: the first N (benchmarks, tests)
  c.mesh.data = -1                 # -1: every device not used by the model axis
  c.mesh.model = 1                 # split dictionaries along the latent dimension
  c.mesh.shard_opt_state = True    # ZeRO: each device holds 1/N of the Adam moments
  c.mesh.split_level2 = True       # cascade: split the level-2 work over atoms across devices

  c.distributed = ml_collections.ConfigDict()
  c.distributed.enabled = "auto"   # auto (SLURM / TPU env) | true | false
  c.distributed.coordinator = ""
  c.distributed.num_processes = 0
  c.distributed.process_id = -1
  return c


def tiny_planted(steps: int) -> ml_collections.ConfigDict:
  """base_config() with a seconds-long run on a small planted hierarchy (d=16): for tests and
  smoke runs; the caller sets config.model."""
  c = base_config()
  c.model.d = 16
  c.steps = steps
  c.batch_size = 64
  c.lr = 3e-3
  c.warmup_steps = 5
  c.checkpoint_every = 20
  c.keep = 2
  c.log_every = 10
  c.data.kind = "planted"
  c.data.planted = dict(d=16, n_parents=4, children_per_parent=3, n_images=40,
                        tokens_per_image=16, embed_dim=8, seed=0)
  c.data.scale_batches = 4
  return c


def _merge(dst: ml_collections.ConfigDict, src: dict, prefix=""):
  for key, value in src.items():
    if isinstance(value, dict) and key in dst and isinstance(dst[key], ml_collections.ConfigDict) \
        and key not in ("model", "planted"):
      _merge(dst[key], value, prefix + key + ".")
    elif isinstance(value, dict):
      dst[key] = ml_collections.ConfigDict(value)
    else:
      with dst.ignore_type():
        dst[key] = value


def to_plain(config) -> dict:
  if isinstance(config, ml_collections.ConfigDict):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(config))


def complete(config) -> ml_collections.ConfigDict:
  """A new ConfigDict: base_config() overlaid with everything `config` sets."""
  out = base_config()
  _merge(out, to_plain(config))
  return out


def validate(config) -> None:
  """Raises ValueError naming the offending key before any data is read."""
  def positive(name, v, allow_zero=False):
    ok = isinstance(v, int) and not isinstance(v, bool) and (v >= 0 if allow_zero else v > 0)
    if not ok:
      raise ValueError(f"config.{name} must be a {'non-negative' if allow_zero else 'positive'} "
                       f"integer, got {v!r}")
  if not config.model or "name" not in config.model:
    raise ValueError("config.model is empty: set config.model.name, config.model.d and the "
                     "family options (see csae_jax/models.py)")
  positive("steps", config.steps)
  positive("batch_size", config.batch_size)
  positive("checkpoint_every", config.checkpoint_every)
  positive("keep", config.keep)
  positive("log_every", config.log_every)
  positive("warmup_steps", config.warmup_steps, allow_zero=True)
  if config.lr is not None and not config.lr > 0:
    raise ValueError(f"config.lr must be > 0 or None, got {config.lr!r}")
  if config.data.kind not in ("planted", "store"):
    raise ValueError(f"config.data.kind must be 'planted' or 'store', got {config.data.kind!r}")
  if config.data.kind == "store" and not config.data.path:
    raise ValueError("config.data.kind='store' needs config.data.path (an activation store dir)")
  if config.data.input_scale is not None and not config.data.input_scale > 0:
    raise ValueError(f"config.data.input_scale must be > 0 or None, got {config.data.input_scale}")
  if config.progress not in ("auto", "always", "never"):
    raise ValueError(f"config.progress must be auto|always|never, got {config.progress!r}")
  nd = config.mesh.num_devices
  if not isinstance(nd, int) or (nd <= 0 and nd != -1):
    raise ValueError(f"config.mesh.num_devices must be a positive integer or -1, got {nd!r}")
  for name in ("data", "model"):
    v = config.mesh[name]
    if not isinstance(v, int) or (v <= 0 and not (name == "data" and v == -1)):
      raise ValueError(f"config.mesh.{name} must be a positive integer"
                       f"{' or -1' if name == 'data' else ''}, got {v!r}")


def _flatten(d: dict, prefix="") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict) and v:
      out.update(_flatten(v, prefix + k + "."))
    else:
      out[prefix + k] = v
  return out


def differences(saved: dict, current: dict) -> list[str]:
  """Keys (dotted) whose values differ, ignoring RUNTIME_KEYS."""
  a, b = _flatten(saved), _flatten(current)
  out = []
  for key in sorted(set(a) | set(b)):
    if any(key == r or key.startswith(r + ".") for r in RUNTIME_KEYS):
      continue
    if a.get(key) != b.get(key):
      out.append(f"{key}: saved {a.get(key)!r}, now {b.get(key)!r}")
  return out


def from_json(text: str) -> ml_collections.ConfigDict:
  return complete(json.loads(text))


# ----------------------------------------------------------------------------- paper settings
PAPER_N = {"l1": 20_000, "l2": 10_000}   # Level-1 / Level-2 sizes for every method (paper E.1)
PAPER_K = {"l1": 6, "l2": 1}             # the release's k1, k2 (SPEC 3)
QWEN3VL_D = 1024                         # Qwen3-VL-4B vision block 23 (SPEC 6)

def paper_baseline(family: str, size: str = "l1", d: int = QWEN3VL_D) -> ml_collections.ConfigDict:
  """A flat baseline at the paper's sizes: `size` "l1" (n=20000) or "l2" (n=10000).

  The paper trains every flat baseline twice, once per level size, and links them post hoc
  (paper E.1, E.5). k-sparse families use the release's k for that level (k1=6, k2=1).
  """
  if size not in PAPER_N:
    raise ValueError(f"size must be 'l1' (n=20000) or 'l2' (n=10000), got {size!r}")
  from csae_jax import families   # here, not at the top: config files stay free of JAX imports
  known = [n for n in families.names() if families.spec(n).paper_options is not None]
  if family not in known:
    raise ValueError(f"no paper baseline for family {family!r}; one of {sorted(known)}")
  spec = families.spec(family)
  c = base_config()
  c.model.name = family
  c.model.d = d
  options = {"n": PAPER_N[size], **spec.paper_options}
  if spec.k_sparse:
    options["k"] = PAPER_K[size]
  c.model.options = options
  paper_run(c)
  return c


def paper_run(c: ml_collections.ConfigDict) -> None:
  """The release's run length and batch: 1024 tokens per batch, 500M tokens (SPEC 3)."""
  c.batch_size = 1024
  c.steps = 500_000_000 // 1024
  c.warmup_steps = 1000
  c.checkpoint_every = 5000
  c.log_every = 500
  c.data.kind = "store"
