"""Run the launch scripts under jemalloc where the system has it (docs/speed.md, allocator).

XLA:CPU allocates the step's large temporaries (gathered rows, scatter targets, the dense
pre-activation) afresh every step; with glibc malloc big blocks come from mmap and are returned at
free, so every step page-faults them in again. jemalloc keeps them. LD_PRELOAD only works at
process start, so `reexec_with_jemalloc()` re-executes the current command once with it set.
Set CSAE_JEMALLOC=0 to opt out.
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
  os.execve(sys.executable, [sys.executable] + list(argv[1:]),
            dict(os.environ, LD_PRELOAD=preload))
