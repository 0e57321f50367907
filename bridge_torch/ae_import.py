"""Import of the authors' released two-level checkpoint (`ae.pt`, TwoLevelBatchTopKSAE state dict).

Keys (their nn.Linear orientation): sae{1,2}.encoder.weight (n, d), sae{1,2}.encoder.bias (n,),
sae{1,2}.decoder.weight (d, n) whose COLUMN j is atom j, sae{1,2}.b_dec (d,), sae{1,2}.k and
sae{1,2}.threshold (0-d buffers), plus the live masks live_mask{1,2} (bool) and live_n{1,2}.
Ours: W_enc = encoder.weight^T (d, n), W_dec = decoder.weight^T (n, d), thresholds in the state.

Scale. Their save step calls `scale_biases(s)` on BOTH levels: Level 1 is then correct for raw
activations (SPEC 1), but Level 2's biases and threshold were multiplied by s although its inputs
are unit atoms, which SPEC 1 forbids. The import undoes it: Level-2 encoder bias, b_dec and
threshold are divided by `input_scale` (the s of their run). Without s the import refuses, unless
the caller states `level2_biases_scaled=False` (a checkpoint saved before scaling, or with s = 1).
`release_faithful=True` keeps the Level-2 biases and threshold AS SAVED (scaled), as the
release's own evaluation loads them, to reproduce the authors' numbers (docs/release_faithful.md).
Loaded with torch.load(weights_only=True): a file with pickled objects is refused.
"""
from __future__ import annotations

import math
import pickle
from pathlib import Path

from absl import app
from absl import flags
import numpy as np
import torch

LEVEL_KEYS = ("encoder.weight", "encoder.bias", "decoder.weight", "b_dec", "k", "threshold")


class CheckpointError(ValueError):
  """An ae.pt that cannot be imported (pickled objects, missing keys, bad shapes)."""


def load_state_dict_safely(path) -> dict[str, torch.Tensor]:
  """torch.load(weights_only=True); pickled code/objects are refused with a clear error."""
  path = Path(path)
  if not path.is_file():
    raise CheckpointError(f"checkpoint {path} does not exist")
  try:
    sd = torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    raise CheckpointError(
        f"refusing to load {path}: it contains pickled Python objects that weights_only=True "
        f"will not execute ({str(e).splitlines()[0][:200]}). Re-save it as a plain state dict "
        "of tensors (torch.save(model.state_dict(), ...)) from a trusted environment.") from None
  except (RuntimeError, EOFError, OSError) as e:
    raise CheckpointError(f"cannot read {path} as a torch checkpoint: {e}") from None
  if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
    sd = sd["state_dict"]
  if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
    raise CheckpointError(f"{path} is not a state dict of tensors (got {type(sd).__name__})")
  return sd


def _level(sd, prefix: str, path) -> dict[str, np.ndarray]:
  missing = [prefix + k for k in LEVEL_KEYS if prefix + k not in sd]
  if missing:
    have = sorted(k for k in sd if k.startswith(prefix)) or sorted(sd)[:12]
    raise CheckpointError(f"{path}: missing {missing}; found keys {have}")
  out = {k: sd[prefix + k].detach().to(torch.float32).numpy() for k in LEVEL_KEYS}
  for k, v in out.items():
    if not np.all(np.isfinite(v)):
      raise CheckpointError(f"{path}: {prefix}{k} contains NaN/Inf")
  n, d = out["encoder.weight"].shape
  checks = {"encoder.bias": (n,), "decoder.weight": (d, n), "b_dec": (d,), "k": (), "threshold": ()}
  for k, shape in checks.items():
    if out[k].shape != shape:
      raise CheckpointError(f"{path}: {prefix}{k} has shape {out[k].shape}, expected {shape} "
                            f"(from {prefix}encoder.weight {out['encoder.weight'].shape})")
  return out


def import_ae_pt(path, *, input_scale: float | None = None, level2_biases_scaled: bool = True,
                 release_faithful: bool = False):
  """ae.pt -> (Model, params, state, live_masks) in csae_jax's layout, for raw activations.

  release_faithful: Level-2 biases and threshold as saved (no input_scale needed or used).
  """
  from csae_jax import cascade as cascade_lib
  from csae_jax.families import make_config
  from csae_jax.models import Model
  import jax.numpy as jnp

  sd = load_state_dict_safely(path)
  lv1, lv2 = _level(sd, "sae1.", path), _level(sd, "sae2.", path)
  n1, d = lv1["encoder.weight"].shape
  n2, d2 = lv2["encoder.weight"].shape
  if d2 != d:
    raise CheckpointError(f"{path}: sae2 reads d={d2} but sae1's atoms have d={d}")
  if level2_biases_scaled and not release_faithful:
    if input_scale is None:
      raise CheckpointError(
          f"{path}: the release's save step multiplied Level-2 biases and threshold by the input "
          "scale s; pass input_scale=s (--input_scale) to undo it, or level2_biases_scaled=False "
          "if this checkpoint was saved without scaling")
    s = float(input_scale)
    if not math.isfinite(s) or s <= 0:
      raise CheckpointError(f"input_scale must be positive and finite, got {input_scale!r}")
    lv2 = dict(lv2)
    lv2["encoder.bias"] = lv2["encoder.bias"] / s
    lv2["b_dec"] = lv2["b_dec"] / s
    if lv2["threshold"] >= 0:
      lv2["threshold"] = lv2["threshold"] / s

  def to_ours(lv):
    p = {"W_enc": jnp.asarray(lv["encoder.weight"].T), "b_enc": jnp.asarray(lv["encoder.bias"]),
         "W_dec": jnp.asarray(lv["decoder.weight"].T), "b_dec": jnp.asarray(lv["b_dec"])}
    return p

  k1, k2 = int(round(float(lv1["k"]))), int(round(float(lv2["k"])))
  cfg1 = make_config("batchtopk", d=int(d), n=int(n1), k=max(1, min(k1, n1)), aux_k=None)
  cfg2 = make_config("batchtopk", d=int(d), n=int(n2), k=max(1, min(k2, n2)), aux_k=None)
  ccfg = cascade_lib.Config(levels=(cascade_lib.Level("batchtopk", cfg1),
                                    cascade_lib.Level("batchtopk", cfg2)))
  ccfg.validate()
  model = Model("cascade", ccfg)
  params = (to_ours(lv1), to_ours(lv2))
  state = tuple({"tokens_since_fired": jnp.zeros((c.n,), jnp.int32),
                 "threshold": jnp.asarray(float(lv["threshold"]), jnp.float32)}
                for c, lv in ((cfg1, lv1), (cfg2, lv2)))
  live = {k: sd[k].numpy() for k in ("live_mask1", "live_mask2", "live_n1", "live_n2") if k in sd}
  return model, params, state, live


def import_ae_pt_to_export(path, out_dir, *, input_scale: float | None = None,
                           level2_biases_scaled: bool = True, hooked_module: str | None = None,
                           source_model: str | None = None, overwrite: bool = False,
                           release_faithful: bool = False) -> Path:
  """ae.pt -> a native csae_jax export (the format every tool here reads)."""
  from csae_jax import export
  model, params, state, live = import_ae_pt(path, input_scale=input_scale,
                                            level2_biases_scaled=level2_biases_scaled,
                                            release_faithful=release_faithful)
  unscaled = level2_biases_scaled and not release_faithful
  meta = {"imported_from": str(path), "level2_biases_unscaled_by": (
      float(input_scale) if unscaled else None), "release_faithful": bool(release_faithful),
          "live_n1": int(live["live_n1"]) if "live_n1" in live else None,
          "live_n2": int(live["live_n2"]) if "live_n2" in live else None}
  return export.export_model(out_dir, model, params, state, input_scale=1.0,
                             hooked_module=hooked_module, source_model=source_model,
                             metadata=meta, overwrite=overwrite)


def _define_flags() -> None:
  """Flags exist only when this module is the program (importing it defines none)."""
  flags.DEFINE_string("ae_pt", None, "The authors' TwoLevelBatchTopK state dict.")
  flags.DEFINE_string("out", None, "Native export directory to create.")
  flags.DEFINE_float("input_scale", None,
                     "The run's input scale s (undoes the Level-2 bias/threshold scaling).")
  flags.DEFINE_bool("level2_not_scaled", False,
                    "The checkpoint's Level-2 biases were not multiplied by s.")
  flags.DEFINE_bool("release_faithful", False, "Keep Level-2 biases/threshold as saved, as the "
                    "release's evaluation does (docs/release_faithful.md).")
  flags.DEFINE_string("hooked_module", None, "Module path the SAE was trained on.")
  flags.DEFINE_bool("overwrite", False, "Replace an existing export.")
  flags.mark_flags_as_required(["ae_pt", "out"])


def main(argv) -> None:
  """python -m bridge_torch.ae_import --ae_pt=ae.pt --out=DIR --input_scale=S"""
  del argv
  f = flags.FLAGS
  from csae_jax import cli
  with cli.user_errors_exit("ae_import"):
    out = import_ae_pt_to_export(f.ae_pt, f.out, input_scale=f.input_scale,
                                 level2_biases_scaled=not f.level2_not_scaled,
                                 hooked_module=f.hooked_module, overwrite=f.overwrite,
                                 release_faithful=f.release_faithful)
  print(f"wrote {out}")


def cli() -> None:
  """Console-script entry point (csae-ae-import)."""
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  cli()
