"""csae_jax/allocator.py: the launch scripts re-exec once under jemalloc when the system has it."""
import os
import subprocess
import sys

import pytest

from csae_jax import allocator

SCRIPT = ("import os; from csae_jax import allocator; allocator.reexec_with_jemalloc(); "
          "print(any('jemalloc' in line for line in open('/proc/self/maps')), "
          "os.environ.get('MALLOC_CONF'))")


def run(env_extra):
  env = dict(os.environ, **env_extra)
  env.pop("LD_PRELOAD", None) if "LD_PRELOAD" not in env_extra else None
  out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env,
                       check=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return out.stdout.strip()


@pytest.mark.skipif(allocator.find_jemalloc() is None, reason="libjemalloc2 not installed")
def test_reexec_loads_jemalloc():
  env = {"CSAE_JEMALLOC": "1"}
  if "MALLOC_CONF" in os.environ:
    env["MALLOC_CONF"] = os.environ["MALLOC_CONF"]
  loaded, conf = run(env).split()
  assert loaded == "True"
  assert conf == os.environ.get("MALLOC_CONF", allocator.RETAIN_CONF)


@pytest.mark.skipif(allocator.find_jemalloc() is None, reason="libjemalloc2 not installed")
def test_user_malloc_conf_is_kept():
  assert run({"CSAE_JEMALLOC": "1", "MALLOC_CONF": "narenas:2"}).split() == ["True", "narenas:2"]


def test_opt_out_keeps_default_allocator():
  assert run({"CSAE_JEMALLOC": "0"}).split()[0] == "False"


def test_cpu_description_names_family_model_and_simd(tmp_path):
  info = tmp_path / "cpuinfo"
  info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\ncpu family\t: 25\nmodel\t\t: 17\n"
                  "flags\t\t: fpu avx2 fma avx512f avx512_bf16\n\nprocessor\t: 1\nmodel\t: 99\n")
  text = allocator.describe_cpu(str(info))
  assert text.startswith("AMD EPYC (family 25 model 17), ")
  assert text.endswith("avx2 fma avx512f avx512_bf16")
  info.write_text("model name\t: AMD EPYC\ncpu family\t: 25\nmodel\t\t: 1\nflags\t\t: avx2 fma\n")
  assert allocator.describe_cpu(str(info)).endswith("avx2 fma, no avx512")
  assert allocator.describe_cpu(str(tmp_path / "missing")).endswith("CPUs")
