"""The paper's tables (Markdown and CSV) and plots (PNG, matplotlib Agg) from evaluation summaries.

Table 1/2: HMS mean and median per method. The full table: HMS min / median / max / mean and the
number of parents with >= 2 children, plus reconstruction (FVU, L0, dead fraction) and, on the
planted hierarchy, recovery figures. Table 4: the ablations. Files are written atomically.
"""
from __future__ import annotations

import csv
import io
import math
import os

import numpy as np

from csae_jax import fileio

def _fmt(v, digits=4):
  if v is None:
    return "-"
  if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
    return str(int(v))
  v = float(v)
  return "nan" if math.isnan(v) else f"{v:.{digits}f}"


def _atomic_write(path, text):
  fileio.write_text_atomic(path, text)


def markdown(header, rows) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(_fmt(c) if not isinstance(c, str) else c for c in r) + " |"
            for r in rows]
  return "\n".join(lines) + "\n"


def csv_text(header, rows) -> str:
  buf = io.StringIO()
  w = csv.writer(buf)
  w.writerow(header)
  for r in rows:
    w.writerow([c if isinstance(c, str) else _fmt(c, 6) for c in r])
  return buf.getvalue()


def _write(out_dir, name, title, header, rows):
  _atomic_write(os.path.join(out_dir, name + ".md"), f"### {title}\n\n" + markdown(header, rows))
  _atomic_write(os.path.join(out_dir, name + ".csv"), csv_text(header, rows))
  return {"header": header, "rows": rows}


def write_tables(out_dir, summaries: dict, methods, ablations, display: dict | None = None) -> dict:
  """Writes table1_2, hms_full, table4, reconstruction (+ recovery when present); returns rows.

  `display` maps method keys to column names (an ablation may share its summary with a method).
  """
  out = {}
  name = lambda m: (display or {}).get(m, summaries[m]["display"])
  if methods:
    rows = [[summaries[m]["display"], summaries[m]["hms"]["mean"], summaries[m]["hms"]["median"],
             summaries[m]["hms"]["count"]] for m in methods]
    out["table1_2"] = _write(out_dir, "table1_2", "Tables 1/2: HMS mean and median per method",
                             ["Method", "HMS mean", "HMS median", "parents (>=2 children)"], rows)
  allm = [m for m in dict.fromkeys(list(methods) + list(ablations))
          if not any(m != o and summaries[m] is summaries[o] for o in methods)]
  rows = []
  for m in allm:
    h = summaries[m]["hms"]
    rows.append([name(m), h["min"], h["median"], h["max"], h["mean"], h["count"],
                 summaries[m]["alive"]])
  out["hms_full"] = _write(out_dir, "hms_full", "HMS min / median / max / mean (all methods)",
                           ["Method", "HMS min", "HMS median", "HMS max", "HMS mean",
                            "parents (>=2 children)", "alive Level-1 units"], rows)
  if ablations:
    header = ["Metric"] + [name(a) for a in ablations]
    rows = [[name] + [summaries[a]["hms"][key] for a in ablations]
            for name, key in (("HMS min", "min"), ("HMS median", "median"), ("HMS max", "max"),
                              ("HMS mean", "mean"), ("parents", "count"))]
    out["table4"] = _write(out_dir, "table4", "Table 4: ablations", header, rows)
  rows = [[name(m), summaries[m]["recon"]["fvu"], summaries[m]["recon"]["l0"],
           summaries[m]["recon"]["dead_fraction"], summaries[m]["recon"]["tokens"]] for m in allm]
  out["reconstruction"] = _write(out_dir, "reconstruction",
                                 "Level-1 reconstruction on held-out tokens",
                                 ["Method", "FVU", "L0", "dead fraction", "tokens"], rows)
  if all("recovery" in summaries[m] for m in allm):
    rows = []
    for m in allm:
      r = summaries[m]["recovery"]
      rows.append([name(m), r["mean_best_child_cos"], r["children_recovered"],
                   r["parent_purity"], r["parent_purity_random"], r["parent_ari"],
                   r["atoms_scored"]])
    out["recovery"] = _write(out_dir, "recovery", "Planted hierarchy recovery",
                             ["Method", "mean best child cos", "children recovered",
                              "parent purity", "purity (random assignment)", "parent ARI",
                              "atoms scored"], rows)
  return out


def write_plots(out_dir, results: dict, methods) -> list[str]:
  """hms_distribution.png (HMS per parent, one box per method), children_per_parent.png."""
  import matplotlib
  matplotlib.use("Agg")

  os.makedirs(out_dir, exist_ok=True)
  methods = list(dict.fromkeys(methods))
  labels = [results[m].summary["display"] for m in methods]
  paths = []
  data = [np.asarray(results[m].hms[0])[np.isfinite(results[m].hms[0])] for m in methods]
  paths.append(_box_strip(data, labels, 0, "HMS per Level-2 unit", "HMS distribution per method",
                          os.path.join(out_dir, "hms_distribution.png")))
  counts = [np.asarray(results[m].child_counts[0]) for m in methods]
  paths.append(_box_strip([c[c > 0] for c in counts], labels, 100, "children per parent",
                          "Children per Level-2 unit (units with >= 1 child)",
                          os.path.join(out_dir, "children_per_parent.png")))
  return paths


def _box_strip(data, labels, seed0, ylabel, title, path):
  """Box plot plus jittered points per method (empty methods keep their slot); returns path."""
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(labels)), 4))
  pos = [i for i, d in enumerate(data) if d.size]
  if pos:
    ax.boxplot([data[i] for i in pos], positions=pos, widths=0.6)
  for i, d in enumerate(data):
    jitter = np.random.default_rng(seed0 + i).uniform(-0.15, 0.15, d.size)
    ax.scatter(i + jitter, d, s=6, alpha=0.5)
  ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  fig.tight_layout()
  _save_fig(fig, path)
  plt.close(fig)
  return path


def _save_fig(fig, path):
  fileio.write_with_path_atomic(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
