"""Startup line and --require_backend (csae_jax/runtime.py)."""
import pytest

from csae_jax import runtime


def test_startup_line_names_backend_and_devices():
  line = runtime.startup_line("train")
  assert line.startswith("train starting: JAX backend cpu, 1 device(s)")
  assert "running on CPU" in line and ".[gpu]" in line


def test_require_backend():
  cpu = {"backend": "cpu", "devices": 1, "kinds": {"cpu": 1}}
  gpu = {"backend": "gpu", "devices": 4, "kinds": {"NVIDIA H100": 4}}
  runtime.require_backend("", cpu)
  runtime.require_backend("cpu", cpu)
  runtime.require_backend("gpu", gpu)
  runtime.require_backend("accelerator", gpu)
  with pytest.raises(runtime.BackendMismatch, match="--require_backend=gpu but JAX runs on cpu"):
    runtime.require_backend("gpu", cpu)
  with pytest.raises(runtime.BackendMismatch, match="accelerator"):
    runtime.require_backend("accelerator", cpu)
  with pytest.raises(runtime.BackendMismatch, match="tpu"):
    runtime.require_backend("tpu", gpu)
  with pytest.raises(ValueError, match="must be one of"):
    runtime.require_backend("cuda", gpu)
