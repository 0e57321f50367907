"""The static concept browser, rendered by headless Chromium (Debian package `chromium`)."""
import html.parser
import os
import shutil
import subprocess

import numpy as np
import pytest

from csae_jax.evaluation import browser
from csae_jax.evaluation.evaluator import Evaluation
from csae_jax.evaluation.sources import ArraySource

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium "
                                "(apt-get install -y chromium)")


class _Dom(html.parser.HTMLParser):
  def __init__(self):
    super().__init__()
    self.classes, self.body = [], {}

  def handle_starttag(self, tag, attrs):
    a = dict(attrs)
    if tag == "body":
      self.body = a
    if "class" in a:
      self.classes.append((tag, a["class"].split()))


def render(path, tmp_path):
  """Rendered DOM of a local page: (classes of elements, body attributes)."""
  profile = tmp_path / "chromium-profile"
  cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--no-first-run", f"--user-data-dir={profile}", "--dump-dom", f"file://{path}"]
  out = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=True).stdout
  dom = _Dom()
  dom.feed(out)
  return dom


def _count(dom, cls):
  return sum(1 for _, c in dom.classes if cls in c)


def test_experiment_browser_renders_every_parent(experiment, tmp_path):
  wd = experiment["workdir"]
  ev = Evaluation.load(os.path.join(wd, "results", "csae"))
  expected = int((ev.child_counts[0] > 0).sum())
  dom = render(os.path.join(wd, "browser", "csae.html"), tmp_path)
  assert _count(dom, "script-error") == 0
  assert _count(dom, "level-2") == expected
  assert dom.body.get("data-rendered-units") == str(expected)
  assert _count(dom, "level-1") == int(ev.child_counts[0].sum())
  assert os.path.exists(os.path.join(wd, "browser", "index.html"))


def _three_level_eval():
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
                    np.ones(6, bool), top, vals, [3, 2])


def test_three_level_tree_and_script_errors_are_caught(tmp_path):
  src = ArraySource(np.zeros((8, 2), np.float32), np.arange(0, 9, 2),
                    embeddings=np.ones((4, 2)), labels=np.array([0, 1, 2, 0]))
  page = tmp_path / "tree.html"
  browser.write_browser(str(page), _three_level_eval(), src, title="three levels")
  dom = render(str(page), tmp_path)
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


def test_swatches_and_real_image_thumbnails(tmp_path):
  from PIL import Image
  Image.new("RGB", (30, 20), (255, 0, 0)).save(tmp_path / "red.png")
  src = ArraySource(np.zeros((4, 2), np.float32), np.array([0, 2, 4]),
                    image_ids=["red.png", "missing.jpg"], labels=np.array([1, 2]))
  thumbs = browser.thumbnails([0, 1], src, image_root=str(tmp_path))
  assert all(u.startswith("data:image/png;base64,") for u in thumbs.values())
  assert thumbs["0"] != thumbs["1"]
  assert browser.swatch(1, 0) != browser.swatch(2, 0) != browser.swatch(2, 1)
