"""The paper's experiment grid on one store: train every method, evaluate, write the tables.

Layout of an experiment workdir:
  experiment.json            the experiment config (a rerun with a different one refuses to mix)
  data/train, data/eval      planted runs only: the planted hierarchy written as activation stores
  runs/<run>/                one trainer workdir per trained SAE (csae_jax.trainer: checkpointed,
                             resumable; a finished run is loaded, never retrained)
  results/<method>/          arrays.npz + summary.json per evaluated method (skipped when present
                             with the same evaluation fingerprint)
  tables/                    table1_2.{md,csv} (HMS mean & median), hms_full.{md,csv},
                             table4.{md,csv} (ablations), reconstruction.{md,csv}
  plots/                     hms_distribution.png, children_per_parent.png
  browser/<method>.html      static concept browsers, index.html

Methods (SPEC 2, 3; paper Tables 1/2 and 4): flat families are two separate SAEs of sizes n1 and
n2 on the same data with co-activation parents; Matryoshka uses its two groups; Stacked uses f2;
CSAE uses its Level-2 encoder; partial/bilateral SG are CSAE variants; HAC/spectral cluster the
Level-1 atoms of `posthoc_source` (default: the flat BatchTopK n1 SAE).
"""
from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import time

import ml_collections
from absl import logging

from csae_jax import families
from csae_jax.evaluation import evaluator as eval_lib
from csae_jax.evaluation import progress as progress_lib
from csae_jax.evaluation import recovery as recovery_lib
from csae_jax.evaluation import release as release_lib
from csae_jax.evaluation import sources as sources_lib
from csae_jax.evaluation import subjects as subjects_lib

# Every registered family with SPEC.table1 is a Table-1 method (registry order = the paper's); the families read
# their facts from FamilySpec: flat ones are trained twice (n1, n2) and linked post hoc, the
# others (Matryoshka's groups, Stacked's second SAE) form two levels on their own.
FLAT_FAMILIES = families.names(hierarchy="flat", table1=True)
TWO_LEVEL_FAMILIES = tuple(n for n in families.names(table1=True) if n not in FLAT_FAMILIES)
TABLE_METHODS = families.names(table1=True) + ("csae",)
# Ablation -> the run it evaluates (hac / spectral cluster the posthoc source's Level-1 atoms).
ABLATION_RUNS = {"partial_sg": "csae_partial", "bilateral_sg": "csae_bilateral",
                 "stacked": "stacked", "hac": None, "spectral": None, "full": "csae_full"}
ABLATIONS = tuple(ABLATION_RUNS)
# posthoc_source -> the run whose Level-1 atoms HAC / spectral cluster
POSTHOC_RUNS = {"batchtopk": "batchtopk_l1", "csae": "csae_full"}
DISPLAY = {**{n: families.spec(n).display for n in families.names()},
           "csae": "CSAE", "partial_sg": "Partial SG", "bilateral_sg": "Bilateral SG",
           "hac": "HAC", "spectral": "Spectral", "full": "CSAE (Full)"}
# Ablation columns that are the same evaluation as a Table-1 method.
ALIASES = {"full": "csae"}
# Top-level keys an experiment config shares with a training config (same names, same meaning).
TRAIN_KEYS = ("steps", "batch_size", "lr", "warmup_steps", "seed", "checkpoint_every", "log_every")


def _split(s) -> list[str]:
  """Names from a tuple (the config's form) or a comma string (--config.methods=csae,relu gives
  the one-element tuple ('csae,relu',) on the command line)."""
  items = s if isinstance(s, (list, tuple)) else [s or ""]
  return [x.strip() for item in items for x in str(item).split(",") if x.strip()]


def _plain(c) -> dict:
  if isinstance(c, ml_collections.ConfigDict):
    return json.loads(c.to_json_best_effort())
  return json.loads(json.dumps(c))


def validate(config) -> None:
  """Raises ValueError naming the offending key before any work."""
  methods, ablations = _split(config.methods), _split(config.ablations)
  for m in methods:
    if m not in TABLE_METHODS:
      raise ValueError(f"config.methods names unknown method {m!r}; known: {TABLE_METHODS}")
  for a in ablations:
    if a not in ABLATIONS:
      raise ValueError(f"config.ablations names unknown ablation {a!r}; known: {ABLATIONS}")
  if not methods and not ablations:
    raise ValueError("config.methods and config.ablations are both empty: nothing to run")
  for name in ("n1", "n2", "k1", "k2"):
    v = config[name]
    if not isinstance(v, int) or v <= 0:
      raise ValueError(f"config.{name} must be a positive integer, got {v!r}")
  if config.k1 > config.n1 or config.k2 > config.n2:
    raise ValueError(f"k1={config.k1} / k2={config.k2} exceed n1={config.n1} / n2={config.n2}")
  if config.data.kind not in ("planted", "store"):
    raise ValueError(f"config.data.kind must be 'planted' or 'store', got {config.data.kind!r}")
  if config.data.kind == "store" and not config.data.path:
    raise ValueError("config.data.kind='store' needs config.data.path (the training store)")
  if config.posthoc_source not in POSTHOC_RUNS:
    raise ValueError(f"config.posthoc_source must be one of {tuple(POSTHOC_RUNS)}, got "
                     f"{config.posthoc_source!r}")
  eval_options(config).validate()


def eval_options(config, posthoc=None) -> eval_lib.Options:
  """eval.release_faithful=True overrides chunks and the alive rule (evaluation/release.py)."""
  e = config.eval
  chunk, top_alive, act_min = e.chunk_tokens, e.top_alive, e.act_min
  per_batch = e.get("images_per_batch", None)
  if e.get("release_faithful", False):
    chunk, top_alive = release_lib.RELEASE_CHUNK_TOKENS, release_lib.RELEASE_TOP_ALIVE
    act_min, per_batch = release_lib.RELEASE_ACT_MIN, release_lib.RELEASE_IMAGES_PER_BATCH
  return eval_lib.Options(chunk_tokens=chunk, top_alive=top_alive, act_min=act_min,
                          children=e.children, posthoc=posthoc, posthoc_clusters=config.n2,
                          hac_linkage=e.hac_linkage, spectral_neighbors=e.spectral_neighbors,
                          top_images=e.top_images, seed=config.seed,
                          images_per_batch=per_batch)


# ----------------------------------------------------------------------------- data
def prepare_data(config, workdir: str) -> tuple[str, str, object]:
  """(train store path, eval store path, planted hierarchy or None).

  Planted data is written once as two stores (train / held-out eval images, with embeddings), so
  planted experiments take exactly the same path as real ones.
  """
  if config.data.kind == "store":
    train = config.data.path
    ev = config.data.eval_path or config.data.path
    return train, ev, None
  from csae_jax import planted as planted_lib
  from csae_jax import store as store_lib
  pc = planted_lib.PlantedConfig(**_plain(config.data.planted))
  train_src, eval_src, ph = sources_lib.planted_sources(pc, config.data.eval_fraction,
                                                        config.seed)
  paths = {}
  for split, src in (("train", train_src), ("eval", eval_src)):
    path = os.path.join(workdir, "data", split)
    paths[split] = path
    if os.path.exists(os.path.join(path, store_lib.MANIFEST)):
      continue
    os.makedirs(os.path.dirname(path), exist_ok=True)
    store_lib.write_store(path, src.tokens, src.token_offsets, labels=src.labels,
                          image_ids=src.image_ids, embeddings=src.embeddings(),
                          label_names=[f"parent_{p}" for p in range(pc.n_parents)],
                          split=split, model="planted", hooked_module="planted",
                          embedding_backbone="planted_codes",
                          manifest_extra={"planted": _plain(config.data.planted)})
  return paths["train"], paths["eval"], ph


# ----------------------------------------------------------------------------- runs
def _family_options(config, family) -> dict:
  fo = config.families.get(family) if "families" in config else None
  return _plain(fo) if fo is not None else {}


def _flat_model(config, family, level, d) -> dict:
  n = config.n1 if level == 1 else config.n2
  opts = dict(n=n)
  if families.spec(family).k_sparse:
    k = config.k1 if level == 1 else (config.flat_level2_k or config.k1)
    opts["k"] = int(min(k, n))
  opts.update(_family_options(config, family))
  opts["n"] = n
  return {"name": family, "d": d, "options": opts}


def _two_level_options(config, family) -> dict:
  """Options of a family that forms both levels itself, by its SPEC.hierarchy (SPEC 2.7, 2.8)."""
  hierarchy = families.spec(family).hierarchy
  if hierarchy == "groups":      # one dictionary: n1 Level-1 latents, then n2 Level-2 latents
    opts = {"n": config.n1 + config.n2, "k": config.k1, "group_sizes": [config.n1, config.n2]}
  elif hierarchy == "on_codes":  # an n2-latent SAE on the codes of the n1-latent one
    opts = {"n": config.n1, "k": config.k1, "n2": config.n2,
            "k2": int(min(config.stacked_k2, config.k1 - 1 if config.k1 > 1 else 1))}
  else:
    raise ValueError(f"{family!r} is a flat family (hierarchy {hierarchy!r})")
  opts.update(_family_options(config, family))
  return opts


def run_models(config, d: int) -> dict[str, dict]:
  """Training model configs (config.model schema of csae_jax.models) of every run needed."""
  methods, ablations = _split(config.methods), _split(config.ablations)
  need = set()
  for m in methods + ablations:
    need.update(_runs_of(config, m))
  out = {}
  for run in sorted(need):
    if run.endswith(("_l1", "_l2")):
      fam, level = run[:-3], int(run[-1])
      out[run] = _flat_model(config, fam, level, d)
    elif run in TWO_LEVEL_FAMILIES:
      out[run] = {"name": run, "d": d, "options": _two_level_options(config, run)}
    else:
      mode = run.split("_")[1]
      lv1 = _cascade_level(config.csae.level1, config.n1, config.k1)
      lv2 = _cascade_level(config.csae.level2, config.n2, config.k2)
      casc = _plain(config.csae.cascade)
      casc["stop_gradient"] = mode
      out[run] = {"name": "cascade", "d": d, "levels": [lv1, lv2], "cascade": casc}
  return out


def _cascade_level(level_config, n: int, k: int) -> dict:
  """One cascade level: BatchTopK unless level_config names a family; n, and k when the family is
  k-sparse (a vq Level 2 has none), unless level_config sets them."""
  lv = dict(family="batchtopk", n=n)
  lv.update(_plain(level_config))
  if families.spec(lv["family"]).k_sparse:
    lv.setdefault("k", k)
  return lv


def train_config(config, model: dict, train_path: str):
  from csae_jax.trainer.config import base_config
  c = base_config()
  c.model = ml_collections.ConfigDict(model)
  for key in TRAIN_KEYS:     # the same names as a training config (csae_jax.trainer.config)
    c[key] = config[key]
  c.progress = "never"
  c.data.kind = "store"
  c.data.path = train_path
  c.data.verify = config.data.verify
  c.data.scale_batches = config.data.scale_batches
  return c


def train_or_load(config, run_dir: str, model: dict, train_path: str):
  """A finished run is loaded; an unfinished one resumes (csae_jax.trainer)."""
  from csae_jax import trainer
  from csae_jax.trainer import checkpoint as ckpt_lib
  from csae_jax.trainer import config as cfg_lib
  rd = ckpt_lib.RunDir(run_dir)
  want = train_config(config, model, train_path)
  if rd.finished():
    diffs = cfg_lib.differences(ckpt_lib.read_json(rd.config),
                                cfg_lib.to_plain(cfg_lib.complete(want)))
    if diffs:
      raise ValueError(f"{run_dir} holds a finished run of another config ({'; '.join(diffs)}); "
                       "use another --workdir or --config.overwrite=True")
  else:
    t0 = time.time()
    trainer.train(want, run_dir)
    logging.info("trained %s in %.1fs", run_dir, time.time() - t0)
  return trainer.load_run(run_dir)


# ----------------------------------------------------------------------------- evaluation
def _subject(config, method, runs):
  e = config.eval
  kw = dict(encoding=e.encoding, coact_source=e.coact_source,
            matryoshka_groups=tuple(e.matryoshka_groups))

  def raw(run):
    p, s = run.raw_params()
    return run.model, p, s

  if method in FLAT_FAMILIES:
    m1, p1, s1 = raw(runs[f"{method}_l1"])
    m2, p2, s2 = raw(runs[f"{method}_l2"])
    return subjects_lib.from_model(m1, p1, s1, model2=m2, params2=p2, state2=s2, **kw), None
  if method not in ("hac", "spectral"):   # one run forms both levels
    (run,) = _runs_of(config, method)
    return subjects_lib.from_model(*raw(runs[run]), **kw), None
  m, p, s = raw(runs[POSTHOC_RUNS[config.posthoc_source]])
  if m.is_cascade:  # cluster the CSAE's Level-1 atoms: evaluate its Level 1 as a flat SAE
    lv1 = m.cfg.levels[0]
    from csae_jax.models import Model
    m, p, s = Model(lv1.family, lv1.cfg), p[0], s[0]
  return subjects_lib.from_model(m, p, s, **kw), method


def method_subject(config, method, runs):
  """The Subject `method` is evaluated as (its Level-1 SAE for raw activations); `runs` holds
  the trained runs of method_runs(config, method). Used by bridge_torch.fidelity."""
  return _subject(config, method, runs)[0]


def method_runs(config, method) -> list[str]:
  """Names of the trainer runs `method` needs (under <workdir>/runs)."""
  return _runs_of(config, ALIASES.get(method, method))


def fingerprint(config, method) -> str:
  keys = {k: _plain(config[k]) for k in ("eval", "n1", "n2", "k1", "k2", *TRAIN_KEYS, "data",
                                         "families", "csae", "posthoc_source", "stacked_k2",
                                         "flat_level2_k")}
  keys["method"] = method
  return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


def evaluate_method(config, method, runs, eval_source, planted, out_dir):
  subject, posthoc = _subject(config, method, runs)
  ev = eval_lib.evaluate(subject, eval_source, eval_options(config, posthoc))
  s = ev.summary
  s["method"] = method
  s["display"] = DISPLAY[method]
  if planted is not None:
    s["recovery"] = recovery_lib.score_recovery(
        subject.atoms1, ev.parents[0], planted.child_dirs, planted.child_parent,
        atoms2=subject.atoms2 if posthoc is None else None, parent_dirs=planted.parent_dirs,
        keep=ev.alive, match_cos=config.eval.match_cos, seed=config.seed)
  s["fingerprint"] = fingerprint(config, method)
  ev.save(out_dir)
  return ev


def _load_cached(config, method, out_dir):
  path = os.path.join(out_dir, "summary.json")
  if not os.path.exists(path) or not os.path.exists(os.path.join(out_dir, "arrays.npz")):
    return None
  with open(path) as f:
    s = json.load(f)
  if s.get("fingerprint") != fingerprint(config, method):
    return None
  return eval_lib.Evaluation.load(out_dir)


def _check_experiment(workdir, config, overwrite):
  path = os.path.join(workdir, "experiment.json")
  plain = _plain(config)
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    keys = ("data", "n1", "n2", "k1", "k2", *TRAIN_KEYS, "families", "csae", "stacked_k2",
            "flat_level2_k")
    diff = [k for k in keys if saved.get(k) != plain.get(k)]
    if diff and not overwrite:
      raise ValueError(f"{workdir} holds an experiment with a different config ({', '.join(diff)} "
                       "differ); its trained runs would be mixed with new ones. Use another "
                       "--workdir or --config.overwrite=True")
    if diff:   # explicit overwrite: remove what this runner wrote for the old config
      import shutil
      logging.warning("overwriting the experiment in %s (%s differ)", workdir, ", ".join(diff))
      for sub in ("runs", "results", "data", "tables", "plots", "browser"):
        shutil.rmtree(os.path.join(workdir, sub), ignore_errors=True)
  eval_lib._atomic_json(path, plain)


def run_experiment(config, workdir: str) -> dict:
  """Trains what is missing, evaluates what is missing, writes tables, plots and browsers."""
  from csae_jax.evaluation import browser as browser_lib
  from csae_jax.evaluation import report as report_lib
  validate(config)
  os.makedirs(workdir, exist_ok=True)
  _check_experiment(workdir, config, bool(config.get("overwrite", False)))
  train_path, eval_path, planted = prepare_data(config, workdir)
  eval_source = sources_lib.open_store(eval_path)
  train_store = sources_lib.open_store(train_path)
  sources_lib.check_source(train_store, need_embeddings=False, what="training store")
  sources_lib.check_source(eval_source, need_embeddings=True, what="evaluation store")
  d = int(train_store.d)
  if eval_source.d != d:
    raise ValueError(f"the evaluation store {eval_path} has d={eval_source.d} but the training "
                     f"store {train_path} has d={d}")
  models = run_models(config, d)
  methods = _split(config.methods) + [a for a in _split(config.ablations)
                                      if a not in _split(config.methods)]
  results, timings, progress = _train_and_evaluate(config, workdir, methods, models, train_path,
                                                   eval_source, planted)
  summaries = {m: results[m].summary for m in methods}
  tables = report_lib.write_tables(os.path.join(workdir, "tables"), summaries,
                                   _split(config.methods), _split(config.ablations), DISPLAY)
  report_lib.write_plots(os.path.join(workdir, "plots"), results,
                         [m for m in methods if ALIASES.get(m) not in methods])
  if config.report.browser:
    browser_lib.write_browsers(os.path.join(workdir, "browser"), results, methods, eval_source,
                               planted_eval_children=_planted_children(config, planted),
                               planted=planted,
                               max_parents=config.report.max_parents,
                               thumbs_per_child=config.report.thumbs_per_child,
                               image_root=config.report.image_root)
  eval_lib._atomic_json(os.path.join(workdir, "timings.json"), timings)
  progress.wrote(workdir)
  return {"summaries": summaries, "tables": tables, "workdir": workdir}


def _make_progress(config, workdir, methods) -> progress_lib.Progress:
  """The plan: which runs are trained or reused, which evaluations are done or cached."""
  from csae_jax.trainer import checkpoint as ckpt_lib
  to_eval, cached, runs = [], [], []
  for method in dict.fromkeys(methods):
    key = ALIASES.get(method, method)
    if key in to_eval or key in cached:
      continue
    if _load_cached(config, key, os.path.join(workdir, "results", key)) is not None:
      cached.append(key)
      continue
    to_eval.append(key)
    runs += [r for r in _runs_of(config, key) if r not in runs]
  finished = [r for r in runs if ckpt_lib.RunDir(os.path.join(workdir, "runs", r)).finished()]
  return progress_lib.Progress([r for r in runs if r not in finished], finished, to_eval, cached,
                               config.steps, config.batch_size)


def _train_and_evaluate(config, workdir, methods, models, train_path, eval_source, planted):
  """(results by method, timings, progress): trains missing runs, evaluates missing methods."""
  progress = _make_progress(config, workdir, methods)
  progress.plan(_split(config.methods), _split(config.ablations))
  runs, results, timings = {}, {}, {}
  for method in dict.fromkeys(methods):
    key = ALIASES.get(method, method)
    out_dir = os.path.join(workdir, "results", key)
    if key in results:
      results[method] = results[key]
      continue
    if key in progress.cached:
      progress.say(f"{method}: evaluation found in {out_dir}, reused")
      results[method] = results[key] = _load_cached(config, key, out_dir)
      continue
    t0 = time.time()
    for run in _runs_of(config, key):
      if run not in runs:
        trains = run in progress.to_train
        if trains:
          progress.start_run(run)
        t_run = time.time()
        runs[run] = train_or_load(config, os.path.join(workdir, "runs", run), models[run],
                                  train_path)
        if trains:
          progress.end_run(run, time.time() - t_run)
    t1 = time.time()
    results[key] = results[method] = evaluate_method(config, key, runs, eval_source, planted,
                                                     out_dir)
    timings[key] = {"train_s": t1 - t0, "eval_s": time.time() - t1}
    log_eval_scalars(workdir, config, key, results[key].summary)
    progress.end_eval(method, time.time() - t1, results[key].summary["hms"]["mean"])
  return results, timings, progress


def eval_scalars(summary: dict) -> dict[str, float]:
  """The evaluation's headline numbers as TensorBoard scalars (finite values only)."""
  out = {f"eval/hms_{k}": summary["hms"][k] for k in ("mean", "median", "count")
         if k in summary.get("hms", {})}
  out.update({f"eval/recon_{k}": v for k, v in summary.get("recon", {}).items() if k != "tokens"})
  out.update({f"eval/recovery/{k}": v for k, v in (summary.get("recovery") or {}).items()})
  return {k: float(v) for k, v in out.items()   # numbers.Real: NumPy scalars included
          if isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))}


def log_eval_scalars(workdir, config, method, summary) -> str:
  """Writes eval/* scalars at the run's last step into the TensorBoard folder of the run the
  method evaluates (its Level-1 run), next to its training curves; post-hoc methods that share a
  run (HAC, spectral) get eval/<method>/* tags. Returns the folder."""
  from tensorboardX import SummaryWriter
  run = _runs_of(config, method)[0]
  own = not (method in ABLATION_RUNS and ABLATION_RUNS[method] is None)   # not HAC / spectral
  tb_dir = os.path.join(workdir, "runs", run, "tensorboard")
  with SummaryWriter(tb_dir) as tb:
    for tag, v in eval_scalars(summary).items():
      tb.add_scalar(tag if own else tag.replace("eval/", f"eval/{method}/", 1), v, config.steps)
  return tb_dir


def _planted_children(config, planted):
  if planted is None:
    return None
  return sources_lib.planted_image_children(planted)


def _runs_of(config, method) -> list[str]:
  """The trained runs a method (or ablation) is evaluated from."""
  if method in FLAT_FAMILIES:
    return [f"{method}_l1", f"{method}_l2"]
  if method in TWO_LEVEL_FAMILIES:
    return [method]
  if method == "csae":
    return ["csae_full"]
  return [ABLATION_RUNS[method] or POSTHOC_RUNS[config.posthoc_source]]
