"""The concept dashboard, rendered by headless Chromium (Debian package `chromium`)."""
import html.parser
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from csae_jax.evaluation import browser
from csae_jax.evaluation import images
from csae_jax.evaluation.evaluator import Evaluation
from csae_jax.evaluation.sources import ArraySource

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium "
                                    "(apt-get install -y chromium)")


class _Dom(html.parser.HTMLParser):
  def __init__(self):
    super().__init__()
    self.classes, self.body, self.tags = [], {}, []

  def handle_starttag(self, tag, attrs):
    a = dict(attrs)
    self.tags.append((tag, a))
    if tag == "body":
      self.body = a
    if "class" in a:
      self.classes.append((tag, a["class"].split()))


def render(path, tmp_path, fragment=""):
  """Rendered DOM of a local page after its scripts ran: (classes of elements, body attributes)."""
  profile = tmp_path / "chromium-profile"
  cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--no-first-run", f"--user-data-dir={profile}", "--dump-dom", f"file://{path}{fragment}"]
  out = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=True).stdout
  dom = _Dom()
  dom.feed(out)
  return dom


def _count(dom, cls, tag=None):
  return sum(1 for t, c in dom.classes if cls in c and (tag is None or t == tag))


@needs_chromium
def test_experiment_dashboard_renders_tree_and_histograms(experiment, tmp_path):
  wd = experiment["workdir"]
  ev = Evaluation.load(os.path.join(wd, "results", "csae"))
  assert ev.stats is not None and ev.atoms2 is not None
  expected = int((ev.child_counts[0] > 0).sum())
  page = os.path.join(wd, "browser", "csae.html")
  dom = render(page, tmp_path)                      # collapsed: only the top rows exist
  assert _count(dom, "script-error") == 0
  assert dom.body.get("data-ready") == "1"
  assert _count(dom, "level-2") == expected
  assert dom.body.get("data-rendered-units") == str(expected)
  assert _count(dom, "level-1") == 0
  dom = render(page, tmp_path, "#expand=all")       # every row opened
  assert _count(dom, "script-error") == 0
  n_children = int(ev.child_counts[0].sum())
  assert _count(dom, "level-1") == n_children
  firing = int(sum((ev.top_values[u, 0] > 0) for u in np.flatnonzero(ev.parents[0] >= 0)))
  assert firing >= 1
  assert _count(dom, "hist", "svg") == firing       # one activation histogram per firing unit
  assert _count(dom, "no-evidence", "div") == n_children - firing   # the silent ones flagged
  assert _count(dom, "top-images") == firing
  assert _count(dom, "heat-img") >= firing
  assert _count(dom, "grid") >= 1                   # heatmap overlays
  assert _count(dom, "legend-item") == 3            # planted parents of the tiny config
  # Search and filters (preset from the URL hash, applied by the page's script).
  top = np.asarray(ev.parents[0])
  child = int(np.flatnonzero(top >= 0)[0])
  dom = render(page, tmp_path, f"#q=l1%20{child}")
  assert dom.body.get("data-rendered-units") == "1"
  assert [a.get("data-unit") for t, a in dom.tags
          if "level-2" in a.get("class", "")] == [str(top[child])]
  h = np.asarray(ev.hms[0])
  cut = float(np.nanmedian(h))
  dom = render(page, tmp_path, f"#hmin={cut}")
  want = int(np.sum((h >= cut) & (ev.child_counts[0] > 0)))
  assert dom.body.get("data-rendered-units") == str(want)
  dom = render(page, tmp_path, "#q=parent_")       # label names of the planted store
  with_evidence = len({int(top[u]) for u in np.flatnonzero(top >= 0) if ev.top_values[u, 0] > 0})
  assert dom.body.get("data-rendered-units") == str(with_evidence)
  dom = render(page, tmp_path, "#q=no-such-label")
  assert dom.body.get("data-rendered-units") == "0"
  index = os.path.join(wd, "browser", "index.html")
  text = open(index).read()
  assert 'class="method highlight" data-method="csae"' in text
  assert 'class="truth"' in text


def _three_level_eval(stats=None):
  parents2 = np.array([0, 0, 1, 1, 2, -1])
  parents3 = np.array([0, 0, 1])
  hms2 = np.array([0.9, 0.5, np.nan])
  hms3 = np.array([0.7, np.nan])
  top = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [1, 0], [2, 1]])
  vals = np.ones_like(top, dtype=np.float32)
  summary = {"levels": {"level2": {"mean": 0.7, "median": 0.7, "count": 2},
                        "level3": {"mean": 0.7, "median": 0.7, "count": 1}},
             "hms": {"mean": 0.7, "median": 0.7, "count": 2}}
  return Evaluation(summary, [parents2, parents3], [hms2, hms3],
                    [np.array([2, 2, 1]), np.array([2, 1])], np.zeros((6, 2), np.float32),
                    np.ones(6, bool), top, vals, [3, 2], stats=stats)


@needs_chromium
def test_three_level_tree_and_script_errors_are_caught(tmp_path):
  src = ArraySource(np.zeros((8, 2), np.float32), np.arange(0, 9, 2),
                    embeddings=np.ones((4, 2)), labels=np.array([0, 1, 2, 0]))
  page = tmp_path / "tree.html"
  browser.write_browser(str(page), _three_level_eval(), src, title="three levels")
  dom = render(str(page), tmp_path, "#expand=all")
  assert _count(dom, "script-error") == 0
  assert _count(dom, "level-3") == 2          # top units with >= 1 child
  assert _count(dom, "level-2") == 3
  assert _count(dom, "level-1") == 5          # unit 5 has no parent
  # The check can fail: a page whose data is broken shows the error in the DOM.
  broken = tmp_path / "broken.html"
  broken.write_text(page.read_text().replace('"units": [', '"units": [}', 1))
  dom = render(str(broken), tmp_path)
  assert _count(dom, "script-error") >= 1
  assert _count(dom, "level-3") == 0


def _silent_eval():
  """Two Level-2 units: #0 with HMS 1.0 whose children never fire, #1 with HMS 0.3 that fires."""
  parents = np.array([0, 0, 1, 1])
  top = np.array([[0, 1], [1, 0], [0, 1], [1, 0]])
  vals = np.array([[0, 0], [0, 0], [2.0, 1.0], [1.5, 0.5]], np.float32)
  summary = {"levels": {"level2": {"mean": 0.65, "median": 0.65, "count": 2}},
             "hms": {"mean": 0.65, "median": 0.65, "count": 2}}
  return Evaluation(summary, [parents], [np.array([1.0, 0.3])], [np.array([2, 2])],
                    np.zeros((4, 2), np.float32), np.ones(4, bool), top, vals, [2])


def test_units_without_evidence_are_flagged_and_sorted_last():
  src = ArraySource(np.zeros((4, 2), np.float32), np.array([0, 2, 4]), labels=np.array([0, 1]))
  data = browser.page_data(_silent_eval(), src, title="t")
  assert [u["u"] for u in data["units"]] == [1, 0]
  assert [u["ev"] for u in data["units"]] == [True, False]
  assert data["without_evidence"] == 1
  assert all(not k["fires"] and k["img"] == [] for k in data["units"][1]["kids"])


def test_image_ids_are_never_read_outside_the_image_root(tmp_path):
  """Issue 10 row 7: '../x.png' and '/abs/x.png' ids are not opened (a tile is rendered)."""
  from PIL import Image
  root, outside = tmp_path / "root", tmp_path / "secret"
  (root / "cls").mkdir(parents=True)
  outside.mkdir()
  Image.new("RGB", (8, 8), (255, 0, 0)).save(outside / "x.png")
  Image.new("RGB", (8, 8), (0, 0, 255)).save(root / "cls" / "ok.png")
  os.symlink(outside / "x.png", root / "cls" / "link.png")
  ids = ["../secret/x.png", str(outside / "x.png"), "cls/ok.png", "cls/link.png",
         "cls/../../secret/x.png"]
  src = ArraySource(np.zeros((5, 2), np.float32), np.arange(6), image_ids=ids,
                    labels=np.zeros(5, np.int64))
  real = images.file_thumb(str(outside / "x.png"))
  for root_arg in (str(root), None):
    thumbs = browser.images_lib.thumbnails(range(5), src, image_root=root_arg)
    assert real not in thumbs.values()
  assert images.safe_path("cls/ok.png", str(root)) == os.path.realpath(root / "cls" / "ok.png")
  assert images.safe_path("cls/ok.png", None) is None
  for bad in ids[:2] + ids[3:]:
    assert images.safe_path(bad, str(root)) is None
  thumbs = images.thumbnails([2], src, image_root=str(root))
  assert thumbs[2] == images.file_thumb(str(root / "cls" / "ok.png"))


def _payload(text):
  return json.loads(text.split('<script id="data" type="application/json">')[1]
                    .split("</script>")[0])


@needs_chromium
def test_hostile_image_ids_and_labels_render_as_text(tmp_path):
  """Issue 10 row 8: ids with '<!--<script>', '</script>' or quotes render, escaped."""
  hostile = ['<!--<script>', '</script><script>document.title="x"</script>', '"\'&<b>\u2028']
  src = ArraySource(np.zeros((4, 2), np.float32), np.array([0, 2, 4]),
                    image_ids=hostile[:2], labels=np.array([0, 1]), label_names=hostile[1:])
  page = tmp_path / "hostile.html"
  data = browser.write_browser(str(page), _silent_eval(), src, title=hostile[0])
  text = page.read_text()
  assert "<!--<script>" not in text and "&<b>" not in text
  assert _payload(text)["images"]["0"][0] == hostile[0]
  dom = render(str(page), tmp_path, "#expand=all")
  assert _count(dom, "script-error") == 0
  assert dom.body.get("data-rendered-units") == str(len(data["units"])) == "2"
  alts = [a.get("alt") for t, a in dom.tags if t == "img"]
  assert hostile[0] in alts and hostile[1] in alts


def test_thumbnails_real_rendered_and_label_colours(tmp_path):
  from PIL import Image
  Image.new("RGB", (30, 20), (255, 0, 0)).save(tmp_path / "red.png")
  src = ArraySource(np.zeros((4, 2), np.float32), np.array([0, 2, 4]),
                    image_ids=["red.png", "missing.jpg"], labels=np.array([1, 2]))
  thumbs = images.thumbnails([0, 1], src, image_root=str(tmp_path))
  assert all(u.startswith("data:image/png;base64,") for u in thumbs.values())
  assert thumbs[0] == images.file_thumb(str(tmp_path / "red.png"))
  assert images.label_color(0, ["red", "blue"]) == images.NAMED["red"]
  assert images.label_color(1, ["red", "blue"]) == images.NAMED["blue"]
  assert images.label_color(1, ["cat", "dog"]) == images.PALETTE[1]
  t = images.tile_image(1, None, 16, child=2)
  px = np.asarray(t)
  assert tuple(px[5, 5]) in {images.PALETTE[1], tuple(int(c * 0.8) for c in images.PALETTE[1])} \
      or np.abs(px.reshape(-1, 3).astype(int) - images.PALETTE[1]).sum(1).min() == 0


def test_procedural_store_images_are_re_rendered_with_their_colours():
  pytest.importorskip("extract_torch.sources")
  from extract_torch import sources as xs
  gen = xs.procedural_source(2, ("red", "blue"), 24, 3)
  manifest = {"source": gen.fingerprint}

  class Src:
    image_ids, labels, label_names = gen.ids, gen.labels, ["red", "blue"]
    token_offsets = np.arange(len(gen.ids) + 1) * 4
  Src.manifest = manifest
  thumbs = images.thumbnails(range(len(gen.ids)), Src)
  for i in range(len(gen.ids)):
    want = gen.load(i)
    want.thumbnail((images.THUMB, images.THUMB))
    assert thumbs[i] == images.png_uri(want)


def test_planted_truth_and_plot(tmp_path):
  from csae_jax import planted as planted_lib
  from csae_jax.evaluation import sources
  cfg = planted_lib.PlantedConfig(d=8, n_parents=2, children_per_parent=2, n_images=40,
                                  tokens_per_image=4, embed_dim=4)
  _, ev_src, ph = sources.planted_sources(cfg, 0.5, 0)
  truth = browser.planted_truth(ph, ev_src)
  # Reference: prototypes by favourite child, HMS per planted parent, computed with loops.
  idx = [int(i.split("-")[1]) for i in ev_src.image_ids]
  e = ev_src.embeddings().astype(np.float64)
  protos = {}
  for c in range(4):
    sel = [k for k, i in enumerate(idx) if ph.image_child[i] == c]
    if sel:
      r = e[sel].mean(0)
      protos[c] = r / np.linalg.norm(r)
  hms = []
  for p in range(2):
    kids = [c for c in protos if ph.child_parent[c] == p]
    if len(kids) >= 2:
      hms.append(np.mean([protos[a] @ protos[b] for a in kids for b in kids if a != b]))
  assert truth["count"] == len(hms)
  assert truth["mean"] == pytest.approx(np.mean(hms), abs=1e-6)
  svg = browser.hms_plot_svg([{"key": "csae", "display": "CSAE", "hms": np.array([0.2, 0.4])},
                              {"key": "relu", "display": "ReLU", "hms": np.array([])}], truth)
  assert svg.count('class="method highlight"') == 1 and 'data-count="2"' in svg
  assert 'class="truth"' in svg and "n=0" in svg


def test_dashboards_rebuild_from_an_experiment_workdir(experiment, tmp_path):
  """launch/dashboard.py: pages from saved evaluations, nothing retrained; clear errors."""
  import sys
  wd = experiment["workdir"]
  out = tmp_path / "rebuilt"
  cmd = [sys.executable, "-m", "launch.dashboard", f"--workdir={wd}", f"--out={out}"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env,
                     cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
  assert r.returncode == 0, r.stderr
  assert sorted(os.listdir(out)) == sorted(os.listdir(os.path.join(wd, "browser")))
  assert not os.path.exists(os.path.join(out, "..", "runs"))
  a = _payload(open(os.path.join(wd, "browser", "csae.html")).read())
  b = _payload(open(out / "csae.html").read())
  assert a == b                                   # the runner and the rebuild agree exactly
  r = subprocess.run(cmd[:3] + [f"--workdir={tmp_path}"], capture_output=True, text=True,
                     timeout=120, env=env,
                     cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
  assert r.returncode == 2 and "--eval_store" in r.stderr and "Traceback" not in r.stderr


def test_folder_stores_show_their_real_images_from_the_recorded_root(tmp_path):
  """A store extracted from folder:<root> records the root: its ids are read under it only."""
  from PIL import Image
  (tmp_path / "cat").mkdir()
  Image.new("RGB", (40, 30), (10, 200, 10)).save(tmp_path / "cat" / "a.png")
  src = ArraySource(np.zeros((2, 2), np.float32), np.array([0, 1, 2]),
                    image_ids=["cat/a.png", "../cat/a.png"], labels=np.array([0, 0]))
  src.manifest = {"source": {"kind": "folder", "root": str(tmp_path)}}
  thumbs = images.thumbnails([0, 1], src)
  assert thumbs[0] == images.file_thumb(str(tmp_path / "cat" / "a.png"))
  assert thumbs[1] != thumbs[0]
  src.manifest = {"source": {"kind": "tfds", "name": "x"}}     # no root recorded: never read
  assert images.thumbnails([0], src)[0] != thumbs[0]
