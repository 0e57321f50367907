"""Run the launch scripts under jemalloc where the system has it (docs/speed.md, allocator).

XLA:CPU allocates the step's large temporaries (gathered rows, scatter targets, the dense
pre-activation) afresh every step; with glibc malloc big blocks come from mmap and are returned at
free, so every step page-faults them in again. jemalloc keeps them, but by default it still
purges dirty pages after 10 s of decay and so page-faults part of them again; MALLOC_CONF
RETAIN_CONF turns purging off (a training process reaches its peak every step anyway). Measured
(docs/speed.md): a fresh 82 MB elementwise output 16 ms with glibc or plain jemalloc, 5 ms with
purging off (3.3 ms in place); the paper-shape step 0.77 s -> 0.56 s. LD_PRELOAD only works at
process start, so `reexec_with_jemalloc()` re-executes the current command once with it set (and
MALLOC_CONF, unless the user set one). Set CSAE_JEMALLOC=0 to opt out.
"""
from __future__ import annotations

import os
import sys

CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",   # Debian / Ubuntu libjemalloc2
    "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/lib/libjemalloc.so.2",
)


RETAIN_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"


def find_jemalloc() -> str | None:
  return next((p for p in CANDIDATES if os.path.exists(p)), None)


def reexec_with_jemalloc() -> None:
  """Replace this process by the same command with jemalloc preloaded (no-op when unavailable,
  already preloaded, opted out, or the original command line is unknown)."""
  if os.environ.get("CSAE_JEMALLOC", "1") == "0":
    return
  if "jemalloc" in os.environ.get("LD_PRELOAD", ""):
    return
  lib = find_jemalloc()
  argv = getattr(sys, "orig_argv", None)
  if lib is None or not argv:
    return
  preload = " ".join(p for p in (lib, os.environ.get("LD_PRELOAD", "")) if p)
  env = dict(os.environ, LD_PRELOAD=preload)
  env.setdefault("MALLOC_CONF", RETAIN_CONF)
  os.execve(sys.executable, [sys.executable] + list(argv[1:]), env)


def describe_cpu(cpuinfo: str = "/proc/cpuinfo") -> str:
  """'AMD EPYC (family 25 model 1), 2 CPUs, avx2 fma, no avx512': benchmark headers name the
  processor, since the machines' kind changes from day to day (docs/speed.md)."""
  info = {}
  try:
    with open(cpuinfo, encoding="utf-8") as f:
      for line in f:
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
        if not line.strip():
          break
  except OSError:
    return f"{os.cpu_count()} CPUs"
  flags = set(info.get("flags", "").split())
  simd = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f in flags)
  if "avx512f" not in flags:
    simd += ", no avx512"
  return (f"{info.get('model name', '?')} (family {info.get('cpu family', '?')} model "
          f"{info.get('model', '?')}), {os.cpu_count()} CPUs, {simd}")


def describe() -> str:
  """The allocator this process runs under, for benchmark headers."""
  if "jemalloc" not in os.environ.get("LD_PRELOAD", ""):
    return "default malloc"
  return f"jemalloc, MALLOC_CONF={os.environ.get('MALLOC_CONF', '')!r}"
