"""HTML, CSS and JavaScript of the concept dashboard (data from browser.page_data, no network).

The script never inserts text as HTML (textContent / setAttribute only), so image ids and label
names from a store cannot inject markup. Rows of the tree are rendered in pages of PAGE_ROWS and
each unit's details only when it is opened. URL hash options (for links, tests, screenshots):
#expand=all opens every rendered row; #q=<text>, #hmin=<x>, #hmax=<x>, #hide=noev preset the
filters (combine with &).
"""
from __future__ import annotations

import html
import importlib.resources

_ASSETS = importlib.resources.files(__package__) / "assets"


def _asset(name: str) -> str:
  return (_ASSETS / name).read_text(encoding="utf-8")


_BODY = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<style>{css}</style></head>
<body>
<div id="errors"></div>
<script>
window.addEventListener("error", function (e) {{
  var div = document.createElement("div");
  div.className = "script-error";
  div.textContent = "script error: " + e.message + " (line " + e.lineno + ")";
  document.getElementById("errors").appendChild(div);
}});
</script>
<header><h1>{title}</h1><div class="summary" id="summary"></div>
<div id="no-stats" class="muted" style="display:none">This evaluation has no per-unit statistics
(evaluated before they existed, or with eval.unit_stats off): only top images are shown.</div></header>
<div class="layout">
<div class="side">
 <div class="panel"><h3>Search and filter</h3>
  <label>unit (12, #12, l1 12) or label<input type="text" id="q" placeholder="e.g. 12 or red"></label>
  <label>HMS from <input type="number" id="hmin" step="0.05"></label>
  <label>HMS to <input type="number" id="hmax" step="0.05"></label>
  <label><input type="checkbox" id="hide-noev"> hide units without evidence</label>
  <button id="expand">expand shown</button> <button id="collapse">collapse all</button>
  <div id="count" class="muted"></div>
 </div>
 <div class="panel legend"><h3>Legend</h3>
  <div><b>Labels</b> (image outlines, label bars, rendered images)</div>
  <div id="label-legend"></div>
  <div id="planted-note"><b>Planted images</b> have no pixels: each is drawn as one tile per token in
   its label's colour (its planted parent), stripes coding its favourite planted child.</div>
  <div><b>Heatmap</b> over each top image: cells are tokens (or pooled patches), darkened
   <span class="sw" style="background:rgba(0,0,0,.7)"></span> by how little the unit fires there
   (scaled to the image's strongest cell); cells at >= 50% of it are outlined
   <span class="sw" style="border:2px solid #ffe600"></span>. The number is the image-level code.</div>
  <div><b>HMS</b>: mean pairwise cosine of the children's prototypes (SPEC 4).</div>
  <div><b>no evidence</b>: no Level-1 descendant fires on any evaluation image, so its HMS
   compares uniform prototypes and says nothing; sorted last.</div>
  <div><b>Histogram</b>: the unit's positive image-level codes (equal bins from 0 to its max);
   density = share of images where it fires.</div>
  <div><b>Quantile bands</b>: firing images ranked by code, cut into equal-count bands.</div>
  <div><b>cos(atom, parent)</b>: cosine of the unit's decoder atom to its parent's atom.</div>
 </div>
</div>
<div class="main"><div id="units"></div><button id="more" class="more">show more</button></div>
</div>
<script id="data" type="application/json">{data}</script>
<script>{script}</script>
</body></html>
"""


def render(title_escaped: str, data_json: str) -> str:
  """The page; `title_escaped` is HTML-escaped, `data_json` escaped for a script element."""
  css, script = _asset("dashboard.css"), _asset("dashboard.js")
  if "</" in css + script or "<!--" in css + script:   # would end or confuse the inline element
    raise ValueError("dashboard assets must not contain '</' or '<!--'")
  return _BODY.format(title=title_escaped, css=css, data=data_json, script=script)


def write_index(path, rows, svg: str, truth, write) -> None:
  """index.html: one line per method page and the HMS plot."""
  items = []
  for r in rows:
    h = r["summary"]
    fmt = lambda v: "n/a" if v is None or v != v else f"{v:.4f}"
    items.append(f'<li><a href="{html.escape(r["key"])}.html">{html.escape(r["display"])}</a> - '
                 f'HMS mean {fmt(h["mean"])}, median {fmt(h["median"])}, {h["count"]} parents</li>')
  note = ""
  if truth:
    note = (f"<p>Planted truth: HMS {truth['mean']:.4f} (mean over {truth['count']} planted "
            "parents, each child's prototype from the evaluation images it is the favourite child "
            "of): a method that recovered the planted hierarchy would score about this.</p>")
  text = ("<!doctype html><html><head><meta charset='utf-8'><title>Concept dashboards</title>"
          "<style>body{font-family:system-ui,sans-serif;margin:16px}</style></head><body>"
          "<h1>Concept dashboards</h1><ul>" + "".join(items) + "</ul>" + svg + note +
          "</body></html>")
  write(path, text)
