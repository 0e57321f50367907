"""csae_jax/allocator.py: the launch scripts re-exec once under jemalloc when the system has it."""
import os
import subprocess
import sys

import pytest

from csae_jax import allocator

SCRIPT = ("from csae_jax import allocator; allocator.reexec_with_jemalloc(); "
          "print(any('jemalloc' in line for line in open('/proc/self/maps')))")


def run(env_extra):
  env = dict(os.environ, **env_extra)
  env.pop("LD_PRELOAD", None) if "LD_PRELOAD" not in env_extra else None
  out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env,
                       check=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return out.stdout.strip()


@pytest.mark.skipif(allocator.find_jemalloc() is None, reason="libjemalloc2 not installed")
def test_reexec_loads_jemalloc():
  assert run({"CSAE_JEMALLOC": "1"}) == "True"


def test_opt_out_keeps_default_allocator():
  assert run({"CSAE_JEMALLOC": "0"}) == "False"
