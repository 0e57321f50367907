"""The concept dashboard: one self-contained static HTML page per evaluated method, plus index.html.

Per page (docs/dashboard.md describes every panel): the Level-N -> ... -> Level-1 tree of the top
units, sorted by evidence then HMS (a unit is without evidence when none of its Level-1 descendants
fires on any evaluation image; those are flagged and sorted last, whatever their HMS); per Level-1
unit its statistics from the evaluation (unit_stats: activation density and histogram, top images
with token heatmaps, examples from activation quantile bands, label breakdown, cosine of its atom
to its parent's). The page carries its data as JSON in a <script type="application/json"> element,
escaped for that context (every '<', '>', '&', U+2028 and U+2029 as a \\u escape), and renders
details lazily when a unit is opened, so 10k units stay fast. index.html links the pages and plots
HMS per method (inline SVG: per-parent points, quartile box, mean, parent counts; CSAE highlighted;
the planted truth marked on planted runs). Nothing is fetched from the network.
"""
from __future__ import annotations

import base64
import html
import json
import math
import os

import numpy as np

from csae_jax.evaluation import dashboard_page
from csae_jax.evaluation import hms as hms_lib
from csae_jax.evaluation import images as images_lib

HIGHLIGHT = ("csae", "full")


def _num(v, digits=4):
  v = float(v)
  return None if not math.isfinite(v) else round(v, digits)


def _children_groups(parents) -> dict:
  """level -> {parent unit: [children one level down]} (levels >= 2, 1-based)."""
  out = {}
  for l, pm in enumerate(parents):
    pm = np.asarray(pm)
    idx = np.flatnonzero(pm >= 0)
    order = np.argsort(pm[idx], kind="stable")
    groups = {}
    for p, c in zip(pm[idx][order], idx[order]):
      groups.setdefault(int(p), []).append(int(c))
    out[l + 2] = groups
  return out


def _finite_list(a, digits):
  """Nested lists of rounded Python floats, None where not finite (JSON has no NaN)."""
  x = np.asarray(a, np.float64)
  out = np.round(x, digits).astype(object)
  out[~np.isfinite(x)] = None
  return out.tolist()


class _Level1:
  """Builds Level-1 nodes from Python lists (converted once: per-element NumPy access is slow)."""

  def __init__(self, ev, n_thumbs):
    self.n_thumbs = n_thumbs
    self.top_i = np.asarray(ev.top_images)[:, :n_thumbs].tolist()
    self.top_v = _finite_list(np.asarray(ev.top_values)[:, :n_thumbs], 4)
    s = ev.stats or {}
    self.stats = bool(s)
    if not s:
      return
    r = lambda k, d: _finite_list(s[k], d)
    self.density, self.hmax, self.mean = r("density", 5), r("hist_max", 4), r("mean_code", 5)
    self.hist = np.asarray(s["hist_counts"]).tolist()
    self.cos = r("parent_cos", 4) if "parent_cos" in s else None
    self.q_i = np.asarray(s["quantile_images"]).tolist()
    self.q_v = _finite_list(s["quantile_values"], 4)
    self.l_i = np.asarray(s["label_ids"]).tolist()
    self.l_c = np.asarray(s["label_counts"]).tolist()
    self.l_s = _finite_list(s["label_share"], 3)
    self.heat = s.get("heat")
    if self.heat is not None:
      self.heat_shape = np.asarray(s["heat_shape"]).tolist()
      self.heat_max = _finite_list(s["heat_max"], 4)

  def node(self, u, used):
    """A Level-1 unit: top images (+ heatmaps), statistics; image indices go into `used`."""
    imgs = [i for i, v in zip(self.top_i[u], self.top_v[u]) if v > 0]
    used.update(imgs)
    node = {"u": int(u), "level": 1, "img": imgs, "val": self.top_v[u][:len(imgs)],
            "fires": len(imgs) > 0}
    if not self.stats:
      return node
    node.update(d=self.density[u], h=self.hist[u], hx=self.hmax[u], m=self.mean[u])
    if self.cos is not None:
      node["cos"] = self.cos[u]
    if self.heat is not None:
      heat = []
      for j in range(min(len(imgs), self.heat.shape[1])):
        r, c = self.heat_shape[u][j]
        cells = self.heat[u, j, :r * c].tobytes()
        heat.append([r, c, base64.b64encode(cells).decode(), self.heat_max[u][j]])
      node["heat"] = heat
    node["q"] = [[[i, v] for i, v in zip(bi, bv) if i >= 0]
                 for bi, bv in zip(self.q_i[u], self.q_v[u])]
    for band in self.q_i[u]:
      used.update(i for i in band if i >= 0)
    node["lab"] = [[l, c, sh] for l, c, sh in zip(self.l_i[u], self.l_c[u], self.l_s[u]) if l >= 0]
    return node


def _child_order(k):
  """Children with evidence first; then Level-1 by density, higher levels by HMS (n/a last)."""
  if k["level"] == 1:
    return (not k["fires"], -(k.get("d") or 0.0), k["u"])
  return (not k["ev"], -(k["hms"] if k["hms"] is not None else -2.0), k["u"])


def page_data(ev, source, *, title: str, max_parents: int = 200, thumbs_per_child: int = 4,
              image_root=None, sub_labels=None, method: str = "") -> dict:
  """The JSON the page renders: the tree from the top level down to Level-1 units."""
  n_levels = len(ev.parents) + 1
  groups = _children_groups(ev.parents)
  fires1 = np.asarray(ev.top_values)[:, 0] > 0 if np.asarray(ev.top_values).size else \
      np.zeros(len(ev.alive), bool)
  evidence = {1: fires1}
  for level in range(2, n_levels + 1):     # a unit has evidence when a descendant fires
    below = evidence[level - 1]
    n_l = len(ev.hms[level - 2])
    evidence[level] = np.array([any(below[c] for c in groups[level].get(p, ()))
                                for p in range(n_l)], bool)
  hms_top = np.asarray(ev.hms[-1], np.float64)
  counts_top = np.asarray(ev.child_counts[-1])
  units = np.flatnonzero(counts_top > 0)
  key = np.where(np.isfinite(hms_top[units]), hms_top[units], -np.inf)
  order = units[np.lexsort((units, -counts_top[units], -key, ~evidence[n_levels][units]))]
  order = order[:max_parents]
  used = set()
  level1 = _Level1(ev, thumbs_per_child)

  def node(level, u):
    if level == 1:
      return level1.node(u, used)
    kids = groups[level].get(int(u), [])
    kid_nodes = [node(level - 1, c) for c in kids]
    kid_nodes.sort(key=_child_order)
    return {"u": int(u), "level": level, "hms": _num(ev.hms[level - 2][u]), "n": len(kids),
            "ev": bool(evidence[level][u]), "kids": kid_nodes}

  tree = [node(n_levels, u) for u in order]
  ids = list(source.image_ids)
  labels = source.labels
  names = list(getattr(source, "label_names", None) or [])
  n_lab = int(np.max(labels)) + 1 if labels is not None and len(labels) else 0
  names += [str(i) for i in range(len(names), n_lab)]
  thumbs = images_lib.thumbnails(used, source, image_root, sub_labels)
  return {
      "title": title, "method": method, "levels": n_levels,
      "summary": _clean(ev.summary.get("levels", {})), "recon": _clean(ev.summary.get("recon", {})),
      "units": tree, "expected_top_units": len(tree),
      "without_evidence": int(sum(not t["ev"] for t in tree)),
      "has_stats": ev.stats is not None,
      "hist_bins": int(ev.stats["hist_counts"].shape[1]) if ev.stats else 0,
      "eval_images": int(source.num_images),
      "label_names": names,
      "label_colors": [images_lib.hex_color(images_lib.label_color(i, names))
                       for i in range(len(names))],
      "planted": sub_labels is not None,
      "images": {str(i): [str(ids[i]), int(labels[i]) if labels is not None else -1, thumbs[i]]
                 for i in sorted(used)},
  }


def json_for_script(obj) -> str:
  """JSON safe inside <script>: no '<', '>' or '&' can end or re-open the element (HTML script
  data states, e.g. '<!--<script>'), no U+2028/U+2029 line separators."""
  text = json.dumps(obj, allow_nan=False, ensure_ascii=False, default=_json_default)
  for ch, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"),
                  ("\u2029", "\\u2029")):
    text = text.replace(ch, esc)
  return text


def _json_default(o):
  if isinstance(o, np.integer):
    return int(o)
  if isinstance(o, np.bool_):
    return bool(o)
  if isinstance(o, np.ndarray):
    return _clean(o.tolist())
  if isinstance(o, np.floating):
    return _clean(float(o))
  raise TypeError(f"not JSON serialisable: {type(o)}")


def _clean(obj):
  if isinstance(obj, dict):
    return {str(k): _clean(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_clean(v) for v in obj]
  if isinstance(obj, (np.floating, float)):
    return float(obj) if math.isfinite(float(obj)) else None
  if isinstance(obj, np.integer):
    return int(obj)
  if isinstance(obj, np.bool_):
    return bool(obj)
  return obj


def write_browser(path, ev, source, *, title="CSAE concept dashboard", **kw) -> dict:
  data = page_data(ev, source, title=title, **kw)
  text = dashboard_page.render(html.escape(title), json_for_script(data))
  _write_text_atomic(path, text)
  return data


def _write_text_atomic(path, text: str) -> None:
  from csae_jax.evaluation import report
  report._atomic_write(path, text)


# ----------------------------------------------------------------------------- index + plot
def planted_truth(planted, source) -> dict | None:
  """HMS of the planted hierarchy itself on this evaluation split: each planted child's prototype
  from the images it is the favourite child of (SPEC 4 prototypes), parents = planted parents."""
  if planted is None:
    return None
  ids = list(source.image_ids)
  try:
    idx = np.array([int(str(i).rsplit("-", 1)[1]) for i in ids])
  except (IndexError, ValueError):
    return None
  child = np.asarray(planted.image_child)[idx]
  n_c = len(planted.child_parent)
  v = np.zeros((len(ids), n_c))
  v[np.arange(len(ids)), child] = 1.0
  r = hms_lib.prototypes(v, source.embeddings())
  lv = hms_lib.hms_levels(r, [np.asarray(planted.child_parent)],
                          [int(np.max(planted.child_parent)) + 1], keep1=v.max(0) > 0)[0]
  return dict(lv["summary"], hms=[_num(h) for h in lv["hms"] if np.isfinite(h)])


def hms_plot_svg(rows, truth=None, width=None, height=300) -> str:
  """Inline SVG: per method its per-parent HMS points, quartile box, mean bar and parent count."""
  vals = [np.asarray(r["hms"], np.float64) for r in rows]
  allv = np.concatenate([v for v in vals if v.size] + [np.array([0.0, 1.0])])
  if truth:
    allv = np.append(allv, truth["mean"])
  lo, hi = min(0.0, float(np.floor(allv.min() * 10) / 10)), 1.0
  col_w, left, top, bottom = 96, 48, 28, 58
  width = width or max(left + col_w * max(len(rows), 1) + 20, 600)
  ph = height - top - bottom
  y = lambda h: top + (hi - h) / (hi - lo) * ph
  out = [f'<svg class="hms-plot" xmlns="http://www.w3.org/2000/svg" width="{width}" '
         f'height="{height}" role="img" aria-label="HMS per method">',
         '<text x="4" y="16" font-size="12">HMS per Level-2 parent (points), quartiles (box), '
         'mean (bar); n = parents with &gt;= 2 children</text>']
  for t in np.linspace(lo, hi, int(round((hi - lo) / 0.2)) + 1):
    out.append(f'<line x1="{left}" x2="{width - 10}" y1="{y(t):.1f}" y2="{y(t):.1f}" '
               f'stroke="#eee"/><text x="{left - 6}" y="{y(t) + 4:.1f}" font-size="10" '
               f'text-anchor="end">{t:.1f}</text>')
  for i, (r, v) in enumerate(zip(rows, vals)):
    cx = left + col_w * i + col_w / 2
    hl = r["key"] in HIGHLIGHT
    color = "#d95f02" if hl else "#1f77b4"
    cls = "method highlight" if hl else "method"
    out.append(f'<g class="{cls}" data-method="{html.escape(r["key"])}" '
               f'data-count="{int(v.size)}">')
    if hl:
      out.append(f'<rect x="{cx - col_w / 2 + 2}" y="{top}" width="{col_w - 4}" height="{ph}" '
                 f'fill="#fdebd9"/>')
    if v.size:
      q1, q3 = np.percentile(v, [25, 75])
      out.append(f'<rect x="{cx - 18}" y="{y(q3):.1f}" width="36" '
                 f'height="{max(y(q1) - y(q3), 1):.1f}" fill="none" stroke="{color}"/>')
      jit = np.random.default_rng(i).uniform(-14, 14, v.size)
      out += [f'<circle cx="{cx + j:.1f}" cy="{y(h):.1f}" r="2" fill="{color}" '
              f'fill-opacity="0.55"/>' for h, j in zip(v, jit)]
      out.append(f'<line x1="{cx - 24}" x2="{cx + 24}" y1="{y(v.mean()):.1f}" '
                 f'y2="{y(v.mean()):.1f}" stroke="{color}" stroke-width="3"/>')
    weight = "bold" if hl else "normal"
    out.append(f'<text x="{cx}" y="{height - bottom + 16}" font-size="11" text-anchor="middle" '
               f'font-weight="{weight}">{html.escape(r["display"])}</text>'
               f'<text x="{cx}" y="{height - bottom + 30}" font-size="10" text-anchor="middle" '
               f'fill="#555">n={int(v.size)}'
               + (f', {v.mean():.3f}' if v.size else "") + '</text></g>')
  if truth and truth.get("mean") is not None and math.isfinite(truth["mean"]):
    ty = y(truth["mean"])
    out.append(f'<g class="truth"><line x1="{left}" x2="{width - 10}" y1="{ty:.1f}" '
               f'y2="{ty:.1f}" stroke="#2ca02c" stroke-dasharray="6 4" stroke-width="2"/>'
               f'<text x="{width - 12}" y="{ty - 5:.1f}" font-size="11" fill="#2ca02c" '
               f'text-anchor="end">planted truth {truth["mean"]:.3f} '
               f'(n={truth["count"]})</text></g>')
  out.append("</svg>")
  return "".join(out)


def write_browsers(out_dir, results: dict, methods, source, *, planted_eval_children=None,
                   planted=None, max_parents=200, thumbs_per_child=4, image_root=None) -> list[str]:
  """One dashboard page per method plus index.html (links, HMS plot, legend)."""
  paths, rows = [], []
  for m in dict.fromkeys(methods):
    ev = results[m]
    name = ev.summary.get("method", m)
    p = os.path.join(out_dir, f"{name}.html")
    if p in paths:
      continue
    display = ev.summary.get("display", m)
    write_browser(p, ev, source, title=f"{display} concept dashboard", max_parents=max_parents,
                  thumbs_per_child=thumbs_per_child, image_root=image_root or None,
                  sub_labels=planted_eval_children, method=name)
    paths.append(p)
    h = np.asarray(ev.hms[0], np.float64)
    rows.append({"key": name, "display": display, "hms": h[np.isfinite(h)],
                 "summary": ev.summary["hms"]})
  truth = planted_truth(planted, source)
  dashboard_page.write_index(os.path.join(out_dir, "index.html"), rows,
                             hms_plot_svg(rows, truth), truth, _write_text_atomic)
  return paths


def write_experiment(workdir: str, out_dir: str | None = None, *, image_root: str | None = None,
                     max_parents: int | None = None, thumbs_per_child: int | None = None) -> list:
  """Rebuild the dashboards of an experiment workdir from its saved evaluations (no training,
  no evaluation): results/<method>, the evaluation store and, for planted runs, the regenerated
  planted hierarchy (deterministic in the saved config)."""
  import ml_collections
  from csae_jax.evaluation import evaluator as eval_lib
  from csae_jax.evaluation import experiments as exp_lib
  from csae_jax.evaluation import sources as sources_lib
  path = os.path.join(workdir, "experiment.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{workdir} is not an experiment workdir (no experiment.json); "
                            "run launch/experiments.py first")
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  split = exp_lib._split
  methods = split(config.methods) + [a for a in split(config.ablations)
                                     if a not in split(config.methods)]
  results = {}
  for m in methods:
    res = os.path.join(workdir, "results", exp_lib.ALIASES.get(m, m))
    if not os.path.exists(os.path.join(res, "summary.json")):
      raise FileNotFoundError(f"{res} is missing: finish the experiment (launch/experiments.py) "
                              "before building its dashboards")
    results[m] = eval_lib.Evaluation.load(res)
  _, eval_path, planted = exp_lib.prepare_data(config, workdir)
  source = sources_lib.open_store(eval_path)
  rep = config.get("report", {})
  children = None if planted is None else sources_lib.planted_image_children(planted)
  return write_browsers(out_dir or os.path.join(workdir, "browser"), results, methods, source,
                        planted_eval_children=children, planted=planted,
                        max_parents=max_parents or rep.get("max_parents", 200),
                        thumbs_per_child=thumbs_per_child or rep.get("thumbs_per_child", 4),
                        image_root=image_root or rep.get("image_root") or None)
