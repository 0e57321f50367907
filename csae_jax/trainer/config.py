"""The training config: defaults, validation, and JSON round trips (interface 2 of the project).

A config is an ml_collections ConfigDict. `base_config()` holds every key `train` reads with its
default, so a config file only sets what it changes; `complete(config)` fills in what a hand-built
config leaves out and `validate` checks it before any data is read.
"""
from __future__ import annotations

import difflib
import json
import math
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


# Subtrees whose keys are the model's / planted generator's own options, checked where they are
# used (build_model, make_config, planted.make_dataset); every other key must exist in base_config.
FREE_FORM = ("model", "data.planted")


def _unknown_key_error(key: str, known) -> ValueError:
  close = difflib.get_close_matches(key.rpartition(".")[2], list(known), n=1)
  hint = f" (did you mean {key.rpartition('.')[0] + '.' if '.' in key else ''}{close[0]}?)" \
      if close else ""
  return ValueError(f"config.{key} is not a training config key{hint}; known keys here: "
                    f"{', '.join(sorted(known))}")


def _merge(dst: ml_collections.ConfigDict, src: dict, prefix="", strict=True):
  for key, value in src.items():
    name = prefix + key
    if strict and key not in dst and not any(name.startswith(f + ".") for f in FREE_FORM):
      raise _unknown_key_error(name, dst.keys())
    if isinstance(value, dict) and key in dst and isinstance(dst[key], ml_collections.ConfigDict) \
        and name not in FREE_FORM:
      _merge(dst[key], value, name + ".", strict)
    elif isinstance(value, dict):
      dst[key] = ml_collections.ConfigDict(value)
    else:
      with dst.ignore_type():
        dst[key] = value


def to_plain(config) -> dict:
  if isinstance(config, ml_collections.ConfigDict):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(config))


def complete(config, strict: bool = True) -> ml_collections.ConfigDict:
  """A new ConfigDict: base_config() overlaid with everything `config` sets.

  strict: a key base_config() does not have (a typo such as `c.stpes`) raises ValueError naming
  it; only the free-form subtrees (FREE_FORM) take any key.
  """
  out = base_config()
  _merge(out, to_plain(config), strict=strict)
  return out


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_int(name, v, minimum=1, allow=()):
  if v in allow and _is_int(v):
    return
  if not _is_int(v) or v < minimum:
    what = {0: "a non-negative", 1: "a positive"}.get(minimum, f"an integer >= {minimum}, i.e. a")
    extra = f" or {' or '.join(map(str, allow))}" if allow else ""
    raise ValueError(f"config.{name} must be {what} integer{extra}, got {v!r}")


def _check_float(name, v, *, low=None, high=None, low_open=True, optional=False):
  """A finite number in (low, high] / [low, high]; None allowed when optional."""
  if v is None and optional:
    return
  ok = _is_number(v) and math.isfinite(v)
  if ok and low is not None:
    ok = v > low if low_open else v >= low
  if ok and high is not None:
    ok = v <= high
  if not ok:
    lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
    hi = "" if high is None else f"<= {high}"
    rng = " and ".join(x for x in (lo, hi) if x)
    raise ValueError(f"config.{name} must be a finite number{' ' + rng if rng else ''}"
                     f"{' or None' if optional else ''}, got {v!r}")


def validate(config) -> None:
  """Raises ValueError naming the offending key, before anything is read or written.

  Checks every training key's type and range (NaN / Inf / negative values included), then builds
  the model so that family and cascade options (k <= n, alphas, ...) fail here too.
  """
  if not config.model or "name" not in config.model:
    raise ValueError("config.model is empty: set config.model.name, config.model.d and the "
                     "family options (see csae_jax/models.py)")
  for name in ("steps", "batch_size", "checkpoint_every", "keep", "log_every"):
    _check_int(name, config[name])
  _check_int("warmup_steps", config.warmup_steps, minimum=0)
  _check_int("seed", config.seed, minimum=0)
  _check_float("lr", config.lr, low=0, optional=True)
  _check_float("decay_start_frac", config.decay_start_frac, low=0, high=1, low_open=False)
  _check_float("clip_norm", config.clip_norm, low=0)
  if not isinstance(config.overwrite, bool):
    raise ValueError(f"config.overwrite must be True or False, got {config.overwrite!r}")
  if config.data.kind not in ("planted", "store"):
    raise ValueError(f"config.data.kind must be 'planted' or 'store', got {config.data.kind!r}")
  if config.data.kind == "store" and not config.data.path:
    raise ValueError("config.data.kind='store' needs config.data.path (an activation store dir)")
  _check_float("data.input_scale", config.data.input_scale, low=0, optional=True)
  for name in ("scale_batches", "scale_max_tokens"):
    _check_int("data." + name, config.data[name])
  for name in ("prefetch", "host_cache_bytes", "device_max_bytes"):
    _check_int("data." + name, config.data[name], minimum=0)
  if config.progress not in ("auto", "always", "never"):
    raise ValueError(f"config.progress must be auto|always|never, got {config.progress!r}")
  _check_int("mesh.num_devices", config.mesh.num_devices, allow=(-1,))
  _check_int("mesh.data", config.mesh.data, allow=(-1,))
  _check_int("mesh.model", config.mesh.model)
  from csae_jax.models import build_model   # deferred: models imports JAX
  try:
    build_model(config.model, config.steps)
  except (ValueError, TypeError) as e:
    raise ValueError(f"config.model: {e}") from None


def _flatten(d: dict, prefix="") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict) and v:
      out.update(_flatten(v, prefix + k + "."))
    else:
      out[prefix + k] = v
  return out


def differences(saved: dict, current: dict) -> list[str]:
  """Keys (dotted) whose values differ, ignoring RUNTIME_KEYS.

  The saved config is completed with today's defaults first, so a run saved before a key existed
  (e.g. data.shuffle) still matches a config that leaves that key at its default.
  """
  a, b = _flatten(to_plain(complete(saved, strict=False))), _flatten(current)
  out = []
  for key in sorted(set(a) | set(b)):
    if any(key == r or key.startswith(r + ".") for r in RUNTIME_KEYS):
      continue
    if a.get(key) != b.get(key):
      out.append(f"{key}: saved {a.get(key)!r}, now {b.get(key)!r}")
  return out


def from_json(text: str) -> ml_collections.ConfigDict:
  """A saved run's config; lenient, so runs saved before unknown keys were refused still load."""
  return complete(json.loads(text), strict=False)
