"""Test-wide settings: CPU JAX, float32 default, offline hubs, and one compilation cache per run.

The cache: most of the suite's time is XLA compiling train steps, and many tests (and the
subprocesses of the launch / tutorial tests, which inherit the environment) compile the same
programs again. JAX's persistent compilation cache in a fresh directory per test session serves
those repeats from disk; it never outlives the session, so no test sees another run's programs.
Set JAX_COMPILATION_CACHE_DIR yourself to keep or disable it (an empty value turns it off).
"""
import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="csae-jax-test-xla-cache-")
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
