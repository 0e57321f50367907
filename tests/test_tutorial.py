"""The README's tutorial, run exactly as written: one tiny store from extraction to steering."""
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def tutorial_block() -> str:
  text = (REPO / "README.md").read_text()
  m = re.search(r"<!-- tutorial:begin -->\s*```bash\n(.*?)```\s*<!-- tutorial:end -->", text, re.S)
  assert m, "README.md has no tutorial block"
  return m.group(1)


@pytest.mark.slow
def test_readme_tutorial_runs_offline_as_written(tmp_path):
  tut = tmp_path / "tut"
  env = dict(os.environ, TUT=str(tut), PY=sys.executable, JAX_PLATFORMS="cpu",
             PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
             HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
  out = subprocess.run(["bash", "-c", tutorial_block()], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0, f"tutorial failed:\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}"
  manifest = json.loads((tut / "store" / "manifest.json").read_text())
  run_cfg = json.loads((tut / "run" / "config.json").read_text())
  assert run_cfg["model"]["d"] == manifest["d"]          # d came from the manifest
  native = json.loads((tut / "export" / "config.json").read_text())
  assert native["source_model"] == manifest["model"]
  assert native["hooked_module"] == manifest["hooked_module"]
  sl = json.loads((tut / "saelens" / "cfg.json").read_text())
  assert sl["model_name"] == manifest["model"] and sl["hook_name"] == manifest["hooked_module"]
  hier = json.loads((tut / "saelens" / "csae_hierarchy.json").read_text())
  assert len(hier["parents"]["level2"]) == sl["d_sae"]
  summary = json.loads((tut / "exp" / "results" / "csae" / "summary.json").read_text())
  assert summary["method"] == "csae"
  assert (tut / "exp" / "browser" / "index.html").stat().st_size > 0
  rows = (tut / "steer" / "table3.csv").read_text().splitlines()
  assert rows[0].startswith("arm") and any(r.startswith("cluster") for r in rows[1:])
  import csae_jax
  h = csae_jax.load(tut / "export")
  assert h.num_levels == 2 and h.model.d == manifest["d"]
