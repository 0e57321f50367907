"""A static HTML concept browser (no server): one self-contained file per evaluated method.

The page lists the top-level units (Level 2 for two levels) sorted by HMS (parents with fewer than
two children last), each with its children down to Level 1 (the whole tree for N levels), and for
every Level-1 child the thumbnails of its top images. Thumbnails are embedded as PNG data URIs:
the real image when its id (optionally under `image_root`) is a readable image file, otherwise a
generated swatch (hue = the image's label, stripes = a sub-label such as the planted child).
Script errors are written into the page (#errors), so a headless browser's DOM dump shows them.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import tempfile

import numpy as np

THUMB = 48


def _png_uri(img) -> str:
  buf = io.BytesIO()
  img.save(buf, format="PNG", optimize=True)
  return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def swatch(label: int, sub_label: int | None = None, size: int = THUMB) -> str:
  """A generated placeholder: hue from `label`, diagonal stripes whose spacing codes `sub_label`."""
  import colorsys
  from PIL import Image
  hue = (int(label) * 0.618033988749895) % 1.0 if label is not None and label >= 0 else 0.0
  sat = 0.65 if label is not None and label >= 0 else 0.0
  base = np.array(colorsys.hsv_to_rgb(hue, sat, 0.9)) * 255
  img = np.tile(base, (size, size, 1))
  if sub_label is not None and sub_label >= 0:
    yy, xx = np.mgrid[:size, :size]
    period = 4 + (int(sub_label) % 7) * 2
    stripe = ((xx + yy * (1 + int(sub_label) % 3)) // (period // 2)) % 2 == 0
    img[stripe] *= 0.6
  return _png_uri(Image.fromarray(img.astype(np.uint8)))


def image_thumb(path: str, size: int = THUMB) -> str | None:
  from PIL import Image
  try:
    with Image.open(path) as im:
      im = im.convert("RGB")
      im.thumbnail((size, size))
      return _png_uri(im)
  except (OSError, ValueError):
    return None


def _resolve(image_id: str, image_root: str | None):
  for cand in ((os.path.join(image_root, image_id),) if image_root else ()) + (image_id,):
    if cand and os.path.isfile(cand):
      return cand
  return None


def thumbnails(indices, source, image_root=None, sub_labels: dict | None = None) -> dict:
  """image index -> data URI for the given images of an evaluation source."""
  ids = list(source.image_ids)
  labels = source.labels
  out = {}
  for i in sorted(set(int(i) for i in indices)):
    iid = str(ids[i])
    uri = None
    path = _resolve(iid, image_root)
    if path is not None:
      uri = image_thumb(path)
    if uri is None:
      lab = int(labels[i]) if labels is not None else -1
      sub = (sub_labels or {}).get(iid)
      uri = swatch(lab, sub)
    out[str(i)] = uri
  return out


def _finite(v):
  v = float(v)
  return None if math.isnan(v) else round(v, 4)


def page_data(ev, source, *, title: str, max_parents: int = 200, thumbs_per_child: int = 4,
              image_root=None, sub_labels=None) -> dict:
  """The JSON the page renders: the tree from the top level down to Level-1 children."""
  n_levels = len(ev.parents) + 1
  top = n_levels  # 1-based level of the top units
  hms_top = np.asarray(ev.hms[-1])
  counts_top = np.asarray(ev.child_counts[-1])
  units = np.flatnonzero(counts_top > 0)
  key = np.where(np.isfinite(hms_top[units]), hms_top[units], -np.inf)
  order = units[np.lexsort((-counts_top[units], -key))][:max_parents]
  children = {}
  for l, pm in enumerate(ev.parents):     # parents of level-(l+1) units, grouped per parent
    pm = np.asarray(pm)
    idx = np.flatnonzero(pm >= 0)
    groups = {}
    for p, c in zip(pm[idx][np.argsort(pm[idx], kind="stable")],
                    idx[np.argsort(pm[idx], kind="stable")]):
      groups.setdefault(int(p), []).append(int(c))
    children[l + 2] = groups
  used_images = set()

  def node(level, u):
    if level == 1:
      imgs = [int(i) for i, v in zip(ev.top_images[u][:thumbs_per_child],
                                     ev.top_values[u][:thumbs_per_child]) if v > 0]
      used_images.update(imgs)
      vals = [round(float(v), 4) for v in ev.top_values[u][:len(imgs)]]
      return {"unit": int(u), "level": 1, "images": imgs, "values": vals}
    kids = children[level].get(int(u), [])
    h = ev.hms[level - 2][u]
    return {"unit": int(u), "level": level, "hms": _finite(h), "n_children": len(kids),
            "children": [node(level - 1, c) for c in kids]}

  tree = [node(top, u) for u in order]
  ids = list(source.image_ids)
  return {"title": title, "levels": n_levels, "summary": ev.summary.get("levels", {}),
          "units": tree, "expected_top_units": len(tree),
          "image_ids": {str(i): str(ids[i]) for i in used_images},
          "thumbs": thumbnails(used_images, source, image_root, sub_labels)}


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1em; background: #fafafa; }}
.unit {{ border: 1px solid #ccc; border-radius: 6px; margin: 6px 0; padding: 6px; background: #fff; }}
.unit .head {{ font-weight: bold; }}
.children {{ margin-left: 1.2em; }}
.level-1 {{ display: inline-block; vertical-align: top; border-color: #ddd; margin: 3px; }}
.level-1 img {{ width: 48px; height: 48px; margin: 1px; image-rendering: pixelated; }}
#errors {{ color: #b00; }}
.hms {{ color: #06c; }}
</style></head>
<body>
<div id="errors"></div>
<h1>{title}</h1>
<div id="summary"></div>
<div id="units"></div>
<script>
window.addEventListener("error", function (e) {{
  var box = document.getElementById("errors");
  var div = document.createElement("div");
  div.className = "script-error";
  div.textContent = "script error: " + e.message + " (line " + e.lineno + ")";
  box.appendChild(div);
}});
</script>
<script id="data" type="application/json">{data}</script>
<script>
(function () {{
  var data = JSON.parse(document.getElementById("data").textContent);
  function el(tag, cls, text) {{
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }}
  function render(node) {{
    var box = el("div", "unit level-" + node.level);
    box.setAttribute("data-unit", node.unit);
    if (node.level === 1) {{
      box.appendChild(el("div", "head", "L1 #" + node.unit));
      node.images.forEach(function (img, j) {{
        var im = el("img");
        im.src = data.thumbs[String(img)];
        im.title = data.image_ids[String(img)] + " (" + node.values[j] + ")";
        im.alt = data.image_ids[String(img)];
        box.appendChild(im);
      }});
      return box;
    }}
    var hms = node.hms === null ? "n/a (<2 children)" : node.hms.toFixed(4);
    var head = el("div", "head", "Level " + node.level + " unit #" + node.unit + " ");
    head.appendChild(el("span", "hms", "HMS " + hms));
    head.appendChild(el("span", "", " \\u00b7 " + node.n_children + " children"));
    box.appendChild(head);
    var kids = el("div", "children");
    node.children.forEach(function (c) {{ kids.appendChild(render(c)); }});
    box.appendChild(kids);
    return box;
  }}
  var root = document.getElementById("units");
  data.units.forEach(function (u) {{ root.appendChild(render(u)); }});
  var s = document.getElementById("summary");
  Object.keys(data.summary).forEach(function (k) {{
    var v = data.summary[k];
    s.appendChild(el("div", "", k + ": HMS mean " + (v.mean === null ? "n/a" : Number(v.mean).toFixed(4)) +
        ", median " + (v.median === null ? "n/a" : Number(v.median).toFixed(4)) + ", parents " + v.count));
  }});
  document.body.setAttribute("data-rendered-units", String(data.units.length));
}})();
</script>
</body></html>
"""


def _json_for_script(obj) -> str:
  text = json.dumps(obj, allow_nan=False, default=lambda o: None)
  return text.replace("</", "<\\/")


def _clean(obj):
  if isinstance(obj, dict):
    return {k: _clean(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_clean(v) for v in obj]
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  if isinstance(obj, (np.floating,)):
    return _clean(float(obj))
  if isinstance(obj, (np.integer,)):
    return int(obj)
  return obj


def write_browser(path, ev, source, *, title="CSAE concept browser", **kw) -> dict:
  data = _clean(page_data(ev, source, title=title, **kw))
  text = _PAGE.format(title=html.escape(title), data=_json_for_script(data))
  _write_text_atomic(path, text)
  return data


def _write_text_atomic(path, text: str) -> None:
  d = os.path.dirname(path) or "."
  os.makedirs(d, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=d, suffix=".html.tmp")
  with os.fdopen(fd, "w") as f:
    f.write(text)
  os.chmod(tmp, 0o644)   # mkstemp creates 0600; the page is meant to be shared
  os.replace(tmp, path)


def write_browsers(out_dir, results: dict, methods, source, *, planted_eval_children=None,
                   max_parents=200, thumbs_per_child=4, image_root=None) -> list[str]:
  """One page per method plus index.html."""
  paths, links = [], []
  for m in dict.fromkeys(methods):
    ev = results[m]
    name = ev.summary.get("method", m)
    p = os.path.join(out_dir, f"{name}.html")
    if p not in paths:
      write_browser(p, ev, source, title=f"{ev.summary.get('display', m)} concept browser",
                    max_parents=max_parents, thumbs_per_child=thumbs_per_child,
                    image_root=image_root or None, sub_labels=planted_eval_children)
      paths.append(p)
      h = ev.summary["hms"]
      links.append(f'<li><a href="{html.escape(name)}.html">{html.escape(ev.summary.get("display", m))}'
                   f"</a> - HMS mean {h['mean']:.4f}, median {h['median']:.4f}, "
                   f"{h['count']} parents</li>")
  index = ("<!doctype html><html><head><meta charset='utf-8'><title>Concept browsers</title>"
           "</head><body><h1>Concept browsers</h1><ul>" + "".join(links) + "</ul></body></html>")
  _write_text_atomic(os.path.join(out_dir, "index.html"), index)
  return paths
