"""Framework-neutral export of trained SAEs: safetensors + JSON, and SAELens's on-disk format.

Why: the steering bridge (bridge_torch), SAELens users and other tools need the weights without
JAX. Every export is for RAW activations: the training input scale s is folded in with
`Model.fold_scale` (b_dec, b_enc and thresholds times s; SPEC 1). Levels >= 2 of a cascade see unit
atoms, never activations, and are never rescaled.

Native format (a directory):
  config.json           {"format": "csae_jax.export", "format_version": 1, "kind": "flat"|"cascade",
                         "d", "levels": [{"family", "config": {Config fields}}], "cascade": {...},
                         "input_scale_folded", "hooked_module", "source_model", "metadata",
                         "weights_sha256"}
  weights.safetensors   "level{l}.{param}" (nested params joined with "."), "level{l}.state.{name}"
                        for the family state (BatchTopK threshold, ...), and for cascades
                        "parents.level{l}" (int32, -1 = no parent; SPEC 4).
Layout of every level: W_enc (d, n), b_enc (n,), W_dec (n, d) whose row j is atom j, b_dec (d,).

SAELens format (a directory): cfg.json + sae_weights.safetensors with SAELens's names and
orientation (W_enc [d_in, d_sae], W_dec [d_sae, d_in]); architectures "standard" (ReLU,
P-annealing), "topk", "jumprelu" (JumpReLU, and BatchTopK / Matryoshka at inference, as SAELens
saves them: a per-latent threshold), "gated"; each family declares its form (SPEC.saelens).

This module imports no torch; JAX is imported only by the functions that build JAX models.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any, NamedTuple

from absl import app
from absl import flags
import numpy as np

from csae_jax import fileio
FORMAT = "csae_jax.export"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
SAELENS_CFG_FILE = "cfg.json"
SAELENS_WEIGHTS_FILE = "sae_weights.safetensors"
# The cascade's hierarchy next to a SAELens export (SAELens reads only its two files).
HIERARCHY_FILE = "csae_hierarchy.json"
HIERARCHY_FORMAT = "csae_jax.hierarchy"

SAELENS_FORMAT_VERSION = "6.0.0"   # the cfg.json layout written (checked with sae-lens 6.54)


def __getattr__(name):
  # SAELENS_ARCHITECTURE {family: SAELens architecture}, read from the families' SPECs on first
  # use so that importing this module (the PyTorch bridge does) does not import JAX.
  if name == "SAELENS_ARCHITECTURE":
    from csae_jax import families
    return {n: families.spec(n).saelens_architecture for n in families.names()
            if families.spec(n).saelens is not None}
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

class ExportError(ValueError):
  """A malformed, mismatched or corrupted export."""


class Export(NamedTuple):
  """A loaded native export as JAX objects (params for raw activations)."""
  config: dict
  model: Any            # csae_jax.models.Model
  params: Any
  state: Any
  parents: tuple        # tuple of np.int32 arrays, one per level >= 2 (empty for flat)


# ----------------------------------------------------------------------------- helpers
def _sha256(path: Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _flatten(tree, prefix: str) -> dict[str, np.ndarray]:
  out = {}
  for key, value in tree.items():
    name = f"{prefix}.{key}"
    if isinstance(value, dict):
      out.update(_flatten(value, name))
    else:
      out[name] = np.ascontiguousarray(np.asarray(value))
  return out


def _unflatten(flat: dict[str, np.ndarray], prefix: str) -> dict:
  tree: dict = {}
  for name, value in flat.items():
    if not name.startswith(prefix + "."):
      continue
    parts = name[len(prefix) + 1:].split(".")
    node = tree
    for p in parts[:-1]:
      node = node.setdefault(p, {})
    node[parts[-1]] = value
  return tree


def _jsonable(value):
  if isinstance(value, tuple):
    return [_jsonable(v) for v in value]
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (np.floating,)):
    return float(value)
  return value


def _config_fields(cfg) -> dict:
  return {f.name: _jsonable(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def _write_dir_atomically(out_dir: Path, files: dict[str, Any], overwrite: bool) -> Path:
  """Write files into a temp dir beside out_dir, then rename it into place (never half-written)."""
  out_dir = Path(out_dir)
  _check_out_dir(out_dir, overwrite)
  return fileio.write_dir_atomic(out_dir, files)


def _is_export_dir(path: Path) -> bool:
  return (path / CONFIG_FILE).is_file() or (path / SAELENS_CFG_FILE).is_file()


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
  if out_dir.exists() and not overwrite:
    raise FileExistsError(f"{out_dir} exists; pass overwrite=True (--overwrite) to replace it")
  fileio.check_overwrite_target(out_dir, _is_export_dir, "a csae_jax or SAELens export")


def _save_safetensors(tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None):
  from safetensors.numpy import save_file

  def write(path):
    save_file(tensors, str(path), metadata=metadata)
  return write


def _save_json(obj):
  def write(path):
    with open(path, "w") as f:
      json.dump(obj, f, indent=2, sort_keys=True)
  return write


def _check_scale(input_scale) -> float:
  s = float(input_scale)
  if not math.isfinite(s) or s <= 0:
    raise ValueError(f"input_scale must be a positive finite number, got {input_scale!r}")
  return s


def _check_finite(tensors: dict[str, np.ndarray], where: str) -> None:
  for name, arr in tensors.items():
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
      raise ExportError(f"{where}: tensor {name!r} contains NaN/Inf")


# ----------------------------------------------------------------------------- levels
def _levels(model, params, state):
  """[(family, cfg, params, state)] for a flat model (one entry) or each cascade level."""
  if model.is_cascade:
    return [(lv.family, lv.cfg, p, s) for lv, p, s in zip(model.cfg.levels, params, state)]
  return [(model.name, model.cfg, params, state)]


def _state_arrays(state) -> dict[str, np.ndarray]:
  # dead counters are training bookkeeping; only inference state (thresholds, ...) is exported
  return {k: np.asarray(v) for k, v in dict(state).items() if not k.startswith("tokens_since")}


def folded(model, params, state, input_scale: float):
  """(params, state) for raw activations: Model.fold_scale with s (identity for s == 1)."""
  s = _check_scale(input_scale)
  if s == 1.0:
    return params, state
  return model.fold_scale(params, state, s)


# ----------------------------------------------------------------------------- native export
def export_model(out_dir, model, params, state, *, input_scale: float = 1.0,
                 level: int | None = None, hooked_module: str | None = None,
                 source_model: str | None = None, metadata: dict | None = None,
                 overwrite: bool = False) -> Path:
  """Write a native export of `model` (params trained on x / input_scale) for raw activations.

  level: None exports everything (a cascade with its parent maps); an int (1-based) exports that
  cascade level alone as a flat model (level 1 gets the scale folded; levels >= 2 never do).
  """
  s = _check_scale(input_scale)
  params, state = folded(model, params, state, s)
  levels = _levels(model, params, state)
  if level is not None:
    if not isinstance(level, int) or not 1 <= level <= len(levels):
      raise ValueError(f"level must be in 1..{len(levels)}, got {level!r}")
    levels = [levels[level - 1]]
  tensors: dict[str, np.ndarray] = {}
  level_cfgs = []
  for i, (family, cfg, p, st) in enumerate(levels, start=1):
    tensors.update(_flatten(dict(p), f"level{i}"))
    tensors.update({f"level{i}.state.{k}": v for k, v in _state_arrays(st).items()})
    level_cfgs.append({"family": family, "config": _config_fields(cfg)})
  kind = "flat"
  cascade_cfg = None
  if model.is_cascade and level is None:
    kind = "cascade"
    cascade_cfg = {f.name: _jsonable(getattr(model.cfg, f.name))
                   for f in dataclasses.fields(model.cfg) if f.name != "levels"}
    for l, pm in enumerate(model.parent_maps(params), start=2):
      tensors[f"parents.level{l}"] = np.asarray(pm, np.int32)
  tensors = {k: (v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v)
             for k, v in tensors.items()}
  _check_finite(tensors, "export")
  config = {
      "format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, "d": int(model.d),
      "levels": level_cfgs, "cascade": cascade_cfg, "exported_level": level,
      "input_scale_folded": s if (level in (None, 1)) else 1.0,
      "training_input_scale": s,
      "hooked_module": hooked_module, "source_model": source_model, "metadata": metadata or {},
  }

  def write_weights(path):
    _save_safetensors(tensors, {"format": FORMAT})(path)
    config["weights_sha256"] = _sha256(path)

  return _write_dir_atomically(Path(out_dir), {WEIGHTS_FILE: write_weights,
                                               CONFIG_FILE: lambda p: _save_json(config)(p)},
                               overwrite)


CONFIG_KEYS = {"format", "format_version", "kind", "d", "levels", "cascade", "exported_level",
               "input_scale_folded", "training_input_scale", "hooked_module", "source_model",
               "metadata", "weights_sha256"}


def _positive_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _check_config(config, where) -> None:
  """The export config's structure, field by field (NumPy only; families re-check on load)."""
  if not isinstance(config, dict):
    raise ExportError(f"{where}: expected a JSON object, got {type(config).__name__}")
  unknown = sorted(set(config) - CONFIG_KEYS)
  if unknown:
    raise ExportError(f"{where}: unknown field(s) {unknown}; known: {sorted(CONFIG_KEYS)}")
  for key in ("kind", "d", "levels", "weights_sha256"):
    if key not in config:
      raise ExportError(f"{where}: missing field {key!r}")
  if config["kind"] not in ("flat", "cascade"):
    raise ExportError(f"{where}: field 'kind' must be 'flat' or 'cascade', got {config['kind']!r}")
  if not _positive_int(config["d"]):
    raise ExportError(f"{where}: field 'd' must be a positive integer, got {config['d']!r}")
  levels = config["levels"]
  if not isinstance(levels, list) or not levels:
    raise ExportError(f"{where}: field 'levels' must be a non-empty list, got {levels!r:.60}")
  want = "exactly 1 level" if config["kind"] == "flat" else "at least 2 levels"
  if (len(levels) == 1) != (config["kind"] == "flat"):
    raise ExportError(f"{where}: field 'kind' is {config['kind']!r}, which needs {want}; "
                      f"'levels' has {len(levels)}")
  for i, lv in enumerate(levels, start=1):
    f = f"levels[{i - 1}]"
    if not isinstance(lv, dict) or not isinstance(lv.get("family"), str) \
        or not isinstance(lv.get("config"), dict):
      raise ExportError(f"{where}: field '{f}' must be {{'family': str, 'config': {{...}}}}, "
                        f"got {lv!r:.80}")
    c = lv["config"]
    if not _positive_int(c.get("n")):
      raise ExportError(f"{where}: field '{f}.config.n' must be a positive integer, "
                        f"got {c.get('n')!r}")
    if c.get("d", config["d"]) != config["d"]:
      raise ExportError(f"{where}: field '{f}.config.d' is {c.get('d')!r} but 'd' is "
                        f"{config['d']}")
    k = c.get("k")
    if k is not None and (not _positive_int(k) or k > c["n"]):
      raise ExportError(f"{where}: field '{f}.config.k' must be an integer in 1..n={c['n']}, "
                        f"got {k!r}")
  if config["kind"] == "cascade" and not isinstance(config.get("cascade"), dict):
    raise ExportError(f"{where}: field 'cascade' must be an object for kind 'cascade', "
                      f"got {config.get('cascade')!r}")


def _check_parents(config, tensors, where) -> None:
  """A cascade's parent maps: pi_l maps each level l-1 atom to a level-l latent or -1 (SPEC 4)."""
  if config["kind"] != "cascade":
    return
  for l in range(2, len(config["levels"]) + 1):
    name = f"parents.level{l}"
    if name not in tensors:
      raise ExportError(f"{where}: cascade export has no tensor {name!r}")
    pm = tensors[name]
    n_l, n_prev = config["levels"][l - 1]["config"]["n"], config["levels"][l - 2]["config"]["n"]
    if not np.issubdtype(pm.dtype, np.integer) or pm.shape != (n_prev,):
      raise ExportError(f"{where}: {name} must be an integer vector of length {n_prev}, got "
                        f"{pm.dtype} {pm.shape}")
    if pm.size and (pm.min() < -1 or pm.max() >= n_l):
      raise ExportError(f"{where}: {name} holds parent indices outside -1..{n_l - 1} "
                        f"(min {pm.min()}, max {pm.max()})")


def read_export_files(path) -> tuple[dict, dict[str, np.ndarray]]:
  """(config, tensors) of a native export, checked: format, checksum, shapes, finiteness.

  NumPy only, so the PyTorch bridge reads exports without JAX.
  """
  from safetensors.numpy import load_file
  path = Path(path)
  cfg_path, w_path = path / CONFIG_FILE, path / WEIGHTS_FILE
  for p in (cfg_path, w_path):
    if not p.is_file():
      raise ExportError(f"{path} is not a csae_jax export: missing {p.name}")
  try:
    config = json.loads(cfg_path.read_text())
  except json.JSONDecodeError as e:
    raise ExportError(f"{cfg_path} is not valid JSON: {e}") from None
  if config.get("format") != FORMAT:
    raise ExportError(f"{cfg_path}: format is {config.get('format')!r}, expected {FORMAT!r}")
  if config.get("format_version") != FORMAT_VERSION:
    raise ExportError(f"{cfg_path}: format_version {config.get('format_version')!r} is not "
                      f"supported (this code reads {FORMAT_VERSION})")
  digest = _sha256(w_path)
  if config.get("weights_sha256") != digest:
    raise ExportError(f"{w_path}: checksum {digest[:12]}... does not match config.json "
                      f"({str(config.get('weights_sha256'))[:12]}...); the file is corrupted or "
                      "was replaced")
  _check_config(config, cfg_path)
  try:
    tensors = load_file(str(w_path))
  except Exception as e:   # safetensors raises SafetensorError (not exported) for a bad header
    raise ExportError(f"{w_path}: not a readable safetensors file "
                      f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
  _check_finite(tensors, str(w_path))
  d = config["d"]
  _check_parents(config, tensors, w_path)
  for i, lv in enumerate(config["levels"], start=1):
    n = lv["config"]["n"]
    p = _unflatten(tensors, f"level{i}")
    core = p.get("sae1", p)
    # Every family has atoms and an origin; W_enc only where the family has an encoder (a vq
    # level scores with its centres). load_export checks the whole tree against the family.
    for name in ("W_dec", "b_dec"):
      if name not in core:
        raise ExportError(f"{w_path}: level {i} has no tensor {name!r}")
    expect = {"W_enc": (d, n), "W_dec": (n, d), "b_dec": (d,)}
    for name, shape in expect.items():
      if name in core and tuple(core[name].shape) != shape:
        raise ExportError(f"{w_path}: level {i} {name} has shape {tuple(core[name].shape)}, "
                          f"expected {shape} (d={d}, n={n})")
  return config, tensors


def load_export(path) -> Export:
  """The export as a JAX Model + params + state (params for raw activations)."""
  import jax.numpy as jnp
  from csae_jax import cascade as cascade_lib
  from csae_jax.families import get_family, make_config
  from csae_jax.models import Model

  config, tensors = read_export_files(path)
  levels, params, states = [], [], []
  for i, lv in enumerate(config["levels"], start=1):
    fam = lv["family"]
    cfg = make_config(fam, **dict(lv["config"]))
    p = _unflatten(tensors, f"level{i}")
    st_saved = p.pop("state", {})
    _check_param_tree(p, get_family(fam).SPEC.latent_axes, f"{path}: level {i} ({fam})")
    st = dict(get_family(fam).init_state(cfg))
    for k, v in st_saved.items():
      st[k] = jnp.asarray(v)
    levels.append((fam, cfg))
    params.append(jax_tree(p))
    states.append(st)
  parents = tuple(tensors[f"parents.level{l}"] for l in range(2, len(levels) + 1)
                  if f"parents.level{l}" in tensors)
  if config["kind"] == "cascade":
    cc = dict(config["cascade"] or {})
    for key in ("alphas", "level_start_steps"):
      if key in cc and cc[key] is not None:
        cc[key] = tuple(cc[key])
    ccfg = cascade_lib.Config(levels=tuple(cascade_lib.Level(f, c) for f, c in levels), **cc)
    ccfg.validate()
    return Export(config, Model("cascade", ccfg), tuple(params), tuple(states), parents)
  fam, cfg = levels[0]
  return Export(config, Model(fam, cfg), params[0], states[0], ())


def _check_param_tree(params: dict, like: dict, where: str) -> None:
  """The exported tensors of a level name exactly the family's parameters (its SPEC tree)."""
  missing, extra = sorted(set(like) - set(params)), sorted(set(params) - set(like))
  if missing or extra:
    raise ExportError(f"{where}: tensors do not match the family's parameters (missing "
                      f"{missing}, unexpected {extra})")
  for k, v in like.items():
    if isinstance(v, dict):
      if not isinstance(params[k], dict):
        raise ExportError(f"{where}: {k!r} must be a group of tensors")
      _check_param_tree(params[k], v, f"{where}.{k}")


def jax_tree(tree):
  import jax.numpy as jnp
  return {k: jax_tree(v) if isinstance(v, dict) else jnp.asarray(v) for k, v in tree.items()}


# ----------------------------------------------------------------------------- SAELens format
def _saelens_level(family: str, cfg, params, state):
  """(architecture, SAELensLevel) of one flat level: the family's declared conversion."""
  from csae_jax import families
  spec = families.spec(family)
  if spec.saelens is None:
    exportable = [n for n in families.names() if families.spec(n).saelens is not None]
    raise ExportError(f"family {family!r} has no SAELens architecture; exportable families: "
                      f"{sorted(exportable)} (use the native export for {family!r})")
  try:
    return spec.saelens_architecture, spec.saelens(cfg, params, state)
  except ValueError as e:
    raise ExportError(f"{family}: {e}") from None


def saelens_tensors(family: str, cfg, params, state) -> tuple[str, dict[str, np.ndarray], dict]:
  """(architecture, tensors, extra cfg fields) in SAELens's names for one flat level."""
  arch, level = _saelens_level(family, cfg, params, state)
  return arch, level.tensors, level.cfg


def _centred(family: str) -> bool:
  from csae_jax import families
  return families.spec(family).centred


def hierarchy_sidecar(level: int, parents) -> dict:
  """The cascade's parent maps as JSON (HIERARCHY_FILE): parents["level{l}"][j] is the level-l
  parent of atom j of level l-1 (-1: none; SPEC 4), the same arrays as the native export's
  "parents.level{l}" tensors, so a SAELens user keeps the hierarchy."""
  maps = {f"level{l}": [int(v) for v in np.asarray(pm)] for l, pm in enumerate(parents, start=2)}
  return {"format": HIERARCHY_FORMAT, "exported_level": int(level), "num_levels": len(parents) + 1,
          "parents": maps,
          "note": "parents.level{l}[j] = level-l parent of atom j of level l-1, -1 = none"}


def export_saelens(out_dir, model, params, state, *, input_scale: float = 1.0,
                   level: int | None = None, hook_name: str | None = None,
                   model_name: str | None = None, parents=None,
                   folded_scale: float | None = None, overwrite: bool = False) -> Path:
  """Write cfg.json + sae_weights.safetensors that SAELens's disk loader reads (SAE.load_from_disk).

  A cascade exports one level (1-based, default 1: the level that reads activations); level 1
  gets the input scale folded, levels >= 2 (whose inputs are Level-1 atoms) do not. A cascade's
  parent maps go to HIERARCHY_FILE in the same folder (`parents`: the native export's arrays, else
  computed as export_model does). `folded_scale`: params already carry this folded scale (a
  converted native export); recorded, not applied again.
  """
  s = _check_scale(input_scale)
  params, state = folded(model, params, state, s)
  if folded_scale is not None:
    s = _check_scale(folded_scale)
  levels = _levels(model, params, state)
  sidecar = None
  if model.is_cascade:
    level = 1 if level is None else level
    if not isinstance(level, int) or not 1 <= level <= len(levels):
      raise ValueError(f"level must be in 1..{len(levels)} for this {len(levels)}-level cascade, "
                       f"got {level!r}")
    family, cfg, p, st = levels[level - 1]
    if parents is None:
      parents = model.parent_maps(params)
    sidecar = hierarchy_sidecar(level, parents)
  else:
    if level not in (None, 1):
      raise ValueError(f"{model.name!r} is flat; level must be None or 1, got {level!r}")
    family, cfg, p, st = levels[0]
  arch, converted = _saelens_level(family, cfg, p, st)
  tensors, extra = converted.tensors, converted.cfg
  _check_finite(tensors, "SAELens export")
  metadata = {"model_name": model_name, "hook_name": hook_name, "hook_head_index": None,
              "prepend_bos": False, "exported_by": "csae_jax", "source_family": family,
              "input_scale_folded": s if (level in (None, 1)) else 1.0}
  metadata.update(converted.metadata)
  if model.is_cascade:
    metadata["cascade_level"] = level
    if level > 1:
      metadata["note"] = "input is Level-%d decoder atoms (unit vectors), not activations" % (
          level - 1)
  # We write SAELens 6's layout and say so: without a version SAELens converts the file as a
  # pre-6.0 config (and fails on hook_name = null).
  metadata["sae_lens_version"] = SAELENS_FORMAT_VERSION
  cfg_json = {"architecture": arch, "d_in": int(cfg.d), "d_sae": int(cfg.n), "dtype": "float32",
              "device": "cpu", "apply_b_dec_to_input": _centred(family),
              "normalize_activations": "none", "reshape_activations": "none",
              "metadata": metadata, **extra}
  # Older SAELens (< 6) read these at top level; newer ones ignore them. Only when known.
  cfg_json.update({k: v for k, v in (("model_name", model_name), ("hook_name", hook_name))
                   if v is not None})
  files = {SAELENS_WEIGHTS_FILE: _save_safetensors(tensors), SAELENS_CFG_FILE: _save_json(cfg_json)}
  if sidecar is not None:
    files[HIERARCHY_FILE] = _save_json(sidecar)
  return _write_dir_atomically(Path(out_dir), files, overwrite)


# ----------------------------------------------------------------------------- trained runs
def store_manifest_of_run(config) -> dict:
  """The manifest of the run's training store ({} for planted data or a missing store)."""
  data = getattr(config, "data", None)
  if data is None or data.get("kind") != "store" or not data.get("path"):
    return {}
  manifest = Path(data.get("path")) / "manifest.json"
  return json.loads(manifest.read_text()) if manifest.is_file() else {}


def hooked_module_of_run(config) -> str | None:
  """The module path the run's training store was extracted from (its manifest), if any."""
  return store_manifest_of_run(config).get("hooked_module")


def export_run(workdir, out_dir, *, step: int | None = None, level: int | None = None,
               saelens: bool = False, overwrite: bool = False) -> Path:
  """Export a trained run (csae_jax.trainer.load_run) with its input scale folded in."""
  from csae_jax.trainer import load_run
  if Path(out_dir).exists() and not overwrite:
    raise FileExistsError(f"{out_dir} exists; pass overwrite=True (--overwrite) to replace it")
  run = load_run(workdir, step)
  manifest = store_manifest_of_run(run.config)   # model name and hook from the training store
  hooked, source_model = manifest.get("hooked_module"), manifest.get("model")
  meta = {"workdir": str(workdir), "step": int(run.step)}
  if saelens:
    return export_saelens(out_dir, run.model, run.params, run.model_state,
                          input_scale=run.input_scale, level=level, hook_name=hooked,
                          model_name=source_model, overwrite=overwrite)
  return export_model(out_dir, run.model, run.params, run.model_state, input_scale=run.input_scale,
                      level=level, hooked_module=hooked, source_model=source_model, metadata=meta,
                      overwrite=overwrite)


def convert_to_saelens(export_dir, out_dir, *, level: int | None = None,
                       overwrite: bool = False) -> Path:
  """A native export (checked: format, checksum, shapes) rewritten in SAELens's format, with the
  hook, model name and parent maps it carries (`python -m csae_jax.export --from_export`)."""
  if Path(out_dir).exists() and not overwrite:
    raise FileExistsError(f"{out_dir} exists; pass overwrite=True (--overwrite) to replace it")
  ex = load_export(export_dir)
  cfg = ex.config
  return export_saelens(out_dir, ex.model, ex.params, ex.state, level=level,
                        hook_name=cfg.get("hooked_module"), model_name=cfg.get("source_model"),
                        parents=ex.parents if ex.parents else None,
                        folded_scale=float(cfg.get("input_scale_folded", 1.0)),
                        overwrite=overwrite)


def _define_flags() -> None:
  """Flags exist only when this module is the program (importing it defines none)."""
  flags.DEFINE_string("workdir", None, "Trained run directory (python -m launch.train).")
  flags.DEFINE_string("from_export", None, "An existing native export to convert (with --saelens).")
  flags.DEFINE_string("out", None, "Export directory to create.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
  flags.DEFINE_integer("level", None, "One cascade level (1-based; SAELens default: 1).")
  flags.DEFINE_bool("saelens", False, "Write SAELens's cfg.json format.")
  flags.DEFINE_bool("overwrite", False, "Replace an existing export.")
  flags.mark_flags_as_required(["out"])
  flags.mark_flags_as_mutual_exclusive(["workdir", "from_export"], required=True)


def main(argv) -> None:
  """python -m csae_jax.export --workdir=RUN --out=DIR [--level=L] [--saelens] [--overwrite]
  python -m csae_jax.export --from_export=EXPORT --out=DIR --saelens [--level=L]"""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if f.from_export and not f.saelens:
    raise app.UsageError("--from_export converts a native export to SAELens's format: add "
                         "--saelens")
  from csae_jax import cli
  with cli.user_errors_exit("export"):
    if f.from_export:
      out = convert_to_saelens(f.from_export, f.out, level=f.level, overwrite=f.overwrite)
    else:
      out = export_run(f.workdir, f.out, step=f.step, level=f.level, saelens=f.saelens,
                       overwrite=f.overwrite)
  print(f"wrote {out}")


def cli() -> None:
  """Console-script entry point (csae-export)."""
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  cli()
