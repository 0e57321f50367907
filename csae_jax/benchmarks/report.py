"""Mean +- sd tables (markdown, csv) and a plot of the hierarchy benchmark over seeds."""
from __future__ import annotations

import csv
import os

import numpy as np

from csae_jax.benchmarks import suite

SHORT = {"children_recovered": "children", "parent_accuracy": "parent acc",
         "parent_accuracy_chance": "chance", "parent_ari": "parent ARI",
         "grand_ari": "grandparent ARI",
         "orphan_abstain": "orphan abst.", "child_abstain": "child abst.",
         "dead_fraction": "dead", "duplicates": "dup."}


def aggregate(results: list[dict], methods: list[str]) -> dict:
  """{regime: {method: {metric: (mean, sd, n, values)}}} over seeds (nan values skipped)."""
  out: dict = {}
  for res in results:
    for m in methods:
      for k, v in res["scores"].get(m, {}).items():
        out.setdefault(res["regime"], {}).setdefault(m, {}).setdefault(k, []).append(v)
  for regime in out.values():
    for metrics in regime.values():
      for k, vals in metrics.items():
        a = np.asarray(vals, np.float64)
        a = a[np.isfinite(a)]
        metrics[k] = ((float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0, len(a),
                       [float(v) for v in vals]) if len(a) else (float("nan"), 0.0, 0, vals))
  return out


def _cell(stat) -> str:
  mean, sd, n, _ = stat
  if n == 0:
    return "-"
  return f"{mean:.2f} ± {sd:.2f}" if n > 1 else f"{mean:.2f}"


def markdown(agg: dict, methods: list[str]) -> str:
  lines = []
  for regime, per in agg.items():
    seeds = max((v[2] for m in per.values() for v in m.values()), default=0)
    lines.append(f"### regime `{regime}` (mean ± sd over {seeds} seeds)\n")
    cols = [c for c in suite.COLUMNS if any(c in per.get(m, {}) for m in methods)]
    lines.append("| method | " + " | ".join(SHORT.get(c, c) for c in cols) + " |")
    lines.append("|---" * (len(cols) + 1) + "|")
    for m in methods:
      if m not in per:
        continue
      lines.append(f"| {suite.DISPLAY.get(m, m)} | " +
                   " | ".join(_cell(per[m][c]) if c in per[m] else "-" for c in cols) + " |")
    lines.append("")
  return "\n".join(lines)


def write(results: list[dict], methods: list[str], workdir: str) -> str:
  agg = aggregate(results, methods)
  tdir, pdir = os.path.join(workdir, "tables"), os.path.join(workdir, "plots")
  os.makedirs(tdir, exist_ok=True)
  os.makedirs(pdir, exist_ok=True)
  md = markdown(agg, methods)
  _atomic_text(os.path.join(tdir, "benchmark.md"), md)
  rows = [(r, m, k, *v[:3]) for r, per in agg.items() for m, ms in per.items()
          for k, v in ms.items()]
  tmp = os.path.join(tdir, "benchmark.csv.tmp")
  with open(tmp, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["regime", "method", "metric", "mean", "sd", "n"])
    w.writerows(rows)
  os.replace(tmp, os.path.join(tdir, "benchmark.csv"))
  plot(agg, methods, os.path.join(pdir, "benchmark.png"))
  return md


def _atomic_text(path, text):
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def plot(agg: dict, methods: list[str], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  metrics = ("children_recovered", "parent_ari", "parent_accuracy")
  regimes = list(agg)
  fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
  width = 0.8 / max(len(methods), 1)
  for ax, metric in zip(axes[0], metrics):
    for i, m in enumerate(methods):
      means = [agg[r].get(m, {}).get(metric, (np.nan, 0, 0, []))[0] for r in regimes]
      sds = [agg[r].get(m, {}).get(metric, (np.nan, 0, 0, []))[1] for r in regimes]
      ax.bar(np.arange(len(regimes)) + i * width, means, width, yerr=sds,
             label=suite.DISPLAY.get(m, m))
    ax.set_xticks(np.arange(len(regimes)) + 0.4 - width / 2)
    ax.set_xticklabels(regimes)
    ax.set_ylim(0, 1.05)
    ax.set_title(SHORT.get(metric, metric))
  axes[0][-1].legend(fontsize=7, loc="lower right")
  fig.tight_layout()
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=100)
  plt.close(fig)
  os.replace(tmp, path)
