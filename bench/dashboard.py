"""The concept dashboard at scale: statistics, page build, page size and time to first render.

  python -m bench.dashboard --n2=10000 --n1=20000 --images=2000 --repeats=3

Builds synthetic image-level codes (each unit fires on ~5% of images), the per-unit statistics
(unit_stats.compute), an Evaluation whose parent map puts two Level-1 units under each of n2
Level-2 units, and a dashboard page showing all n2 top-level units; then loads it in headless
Chromium (if installed) with the DOM dumped after the scripts ran, collapsed and with the first
page of rows opened, next to an empty page (Chromium's own start-up). Reports each time (range
over repeats), the page's own script time (data-render-ms) and the page size.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app
from absl import flags

from csae_jax.evaluation import browser
from csae_jax.evaluation import unit_stats
from csae_jax.evaluation.evaluator import Evaluation
from csae_jax.evaluation.sources import ArraySource

FLAGS = flags.FLAGS
flags.DEFINE_integer("n1", 20000, "Level-1 units")
flags.DEFINE_integer("n2", 10000, "Level-2 units (all shown)")
flags.DEFINE_integer("images", 2000, "evaluation images")
flags.DEFINE_integer("tokens", 16, "tokens per image")
flags.DEFINE_integer("repeats", 3, "timed repeats")


def _chromium_ms(path, fragment, profile):
  exe = shutil.which("chromium") or shutil.which("chromium-browser")
  if exe is None:
    return None, None, None
  t0 = time.perf_counter()
  out = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        f"--user-data-dir={profile}", "--dump-dom", f"file://{path}{fragment}"],
                       capture_output=True, text=True, timeout=300, check=True).stdout
  import re
  m = re.search(r'data-render-ms="(\d+)"', out)
  return (time.perf_counter() - t0) * 1e3, out.count('class="script-error"'), \
      (int(m.group(1)) if m else None)


def main(_):
  rng = np.random.default_rng(0)
  n1, n2, n_img = FLAGS.n1, FLAGS.n2, FLAGS.images
  v = (rng.gamma(2.0, 0.2, (n_img, n1)) * (rng.random((n_img, n1)) < 0.05)).astype(np.float32)
  labels = rng.integers(0, 50, n_img)
  parent = np.where(np.arange(n1) < 2 * n2, np.arange(n1) // 2, -1)
  atoms1, atoms2 = rng.normal(size=(n1, 32)), rng.normal(size=(n2, 32))
  times = {"stats_s": [], "page_s": [], "load_collapsed_ms": [], "load_open_first_page_ms": [],
           "script_collapsed_ms": [], "script_open_first_page_ms": [], "load_empty_page_ms": []}
  tmp = tempfile.mkdtemp()
  path = os.path.join(tmp, "page.html")
  for _ in range(FLAGS.repeats):
    t0 = time.perf_counter()
    stats = unit_stats.compute(v, labels, atoms1=atoms1, parent=parent, atoms2=atoms2)
    times["stats_s"].append(time.perf_counter() - t0)
    top = np.argsort(-v, axis=0)[:8].T
    tv = np.take_along_axis(v.T, top, 1)
    hms = rng.uniform(0, 1, n2)
    ev = Evaluation({"levels": {"level2": {"mean": 0.5, "median": 0.5, "count": n2}},
                     "hms": {"mean": 0.5, "median": 0.5, "count": n2}}, [parent], [hms],
                    [np.bincount(parent[parent >= 0], minlength=n2)], np.zeros((n1, 2), np.float32),
                    np.ones(n1, bool), top, tv, [n2], atoms1, atoms2, stats)
    src = ArraySource(np.zeros((n_img * FLAGS.tokens, 2), np.float32),
                      np.arange(n_img + 1) * FLAGS.tokens, labels=labels,
                      label_names=[f"class_{i}" for i in range(50)])
    t0 = time.perf_counter()
    browser.write_browser(path, ev, src, title="scale", max_parents=n2)
    times["page_s"].append(time.perf_counter() - t0)
    empty = os.path.join(tmp, "empty.html")
    with open(empty, "w") as f:
      f.write("<!doctype html><html><body data-render-ms='0'>empty</body></html>")
    ms, _, _ = _chromium_ms(empty, "", os.path.join(tmp, "profile"))
    if ms is not None:
      times["load_empty_page_ms"].append(ms)
    for key, frag in (("load_collapsed_ms", ""), ("load_open_first_page_ms", "#expand=all")):
      ms, errors, script_ms = _chromium_ms(path, frag, os.path.join(tmp, "profile"))
      if ms is not None:
        times[key].append(ms)
        times[key.replace("load", "script")].append(script_ms)
        if errors:
          print(f"the page had {errors} script errors: kept {path}")
          return 1
  size = os.path.getsize(path)
  print(f"n1={n1} n2={n2} (all shown) images={n_img}: page {size / 2**20:.1f} MiB")
  for k, vals in times.items():
    if vals:
      print(f"  {k}: {min(vals):.2f} .. {max(vals):.2f} over {len(vals)} runs")
  if os.environ.get("KEEP_PAGE") is None:
    shutil.rmtree(tmp, ignore_errors=True)
  else:
    print(path)
  return 0


if __name__ == "__main__":
  sys.exit(app.run(main))
