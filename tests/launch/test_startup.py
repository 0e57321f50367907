"""Every launch script says what it runs on first, and --require_backend refuses the wrong one
with one line and exit status 2 before anything is written (launch/common.py)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(args, tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)


@pytest.mark.parametrize("program,args", [
    ("launch.train", ["--config=configs/tiny_relu.py"]),
    ("launch.planted", []),
    ("launch.experiments", ["--config=configs/experiments_planted.py"]),
])
def test_jax_programs_name_the_backend_and_refuse_a_missing_gpu(program, args, tmp_path):
  out = tmp_path / "out"
  r = _run([program, *args, f"--workdir={out}", "--require_backend=gpu"], tmp_path)
  name = program.split(".")[1]
  assert r.returncode == 2, r.stderr[-2000:]
  assert f"{name} starting: JAX backend cpu, 1 device(s)" in r.stderr
  assert f"{name}: BackendMismatch: --require_backend=gpu but JAX runs on cpu" in r.stderr
  assert "Traceback" not in r.stderr
  assert not out.exists()


def test_extraction_names_the_torch_device_and_refuses_cuda_without_a_gpu(tmp_path):
  out = tmp_path / "store"
  r = _run(["launch.extract", f"--model={tmp_path / 'none'}", "--source=procedural:2",
            f"--out={out}", "--device=cuda"], tmp_path)
  assert r.returncode == 2, r.stderr[-2000:]
  assert "extract starting: torch 2.13.0" in r.stderr and "CUDA not available" in r.stderr
  assert "torch sees no CUDA device" in r.stderr
  assert not out.exists()
