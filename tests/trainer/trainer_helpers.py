"""Shared helpers of the trainer tests: config loading and subprocess runs of
`python -m launch.train` (PYTHONPATH = the repository, set by subprocess_env)."""
from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def load_config(name: str):
  path = REPO / "configs" / f"{name}.py"
  spec = importlib.util.spec_from_file_location(f"cfg_{name}", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


def subprocess_env(devices: int = 1, cache_dir: str | None = None) -> dict:
  env = dict(os.environ)
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  env["JAX_PLATFORMS"] = "cpu"
  flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
  if devices > 1:
    flags.append(f"--xla_force_host_platform_device_count={devices}")
  env["XLA_FLAGS"] = " ".join(flags)
  if cache_dir:   # the same program compiled by several subprocesses: compile once
    env["JAX_COMPILATION_CACHE_DIR"] = cache_dir
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
  return env


def launch_cmd(config: str, workdir, *overrides: str) -> list[str]:
  return [PYTHON, "-m", "launch.train", f"--config={REPO / 'configs' / config}.py",
          f"--workdir={workdir}", *overrides]


def run(cmd, env, timeout=120) -> subprocess.CompletedProcess:
  out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
  if out.returncode != 0:
    raise AssertionError(f"{cmd} exited {out.returncode}:\n{out.stderr[-4000:]}")
  return out


def leaves(tree) -> list[np.ndarray]:
  import jax
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def max_rel_diff(a, b) -> float:
  return max(float(np.linalg.norm(x - y) / max(np.linalg.norm(x), 1e-30))
             for x, y in zip(leaves(a), leaves(b)))
