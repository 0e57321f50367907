#!/usr/bin/env bash
# One entry point for a fresh machine (see README.md):
#   bash run.sh        set up .venv (CPU torch 2.13.0) and run the main job on its default config
#   bash run.sh test   set up .venv if needed and run the test suite
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
PY=$VENV/bin/python

setup() {
  local stamp=$VENV/.installed-$(sha1sum setup.py | cut -c1-12)
  if [ ! -x "$PY" ]; then
    python3 -m venv "$VENV"
  fi
  if [ ! -f "$stamp" ]; then
    "$PY" -m pip install -q --upgrade pip
    # torch first and pinned, so nothing below can pull a CUDA build.
    "$PY" -m pip install -q "torch==2.13.0"
    "$PY" -m pip install -q -e ".[extract,dev]"
    rm -f "$VENV"/.installed-*
    touch "$stamp"
  fi
  # jemalloc: the launch scripts re-exec under it when present (docs/speed.md, allocator).
  if [ ! -e /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 ] && command -v apt-get >/dev/null 2>&1 \
      && [ "$(id -u)" = 0 ]; then
    (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libjemalloc2 >/dev/null 2>&1) \
      || echo "note: libjemalloc2 not installed; training uses the default allocator" >&2
  fi
  # The concept browser's test renders the page in headless Chromium (Debian's package).
  if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
      && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
      >/dev/null) || echo "warning: could not install chromium; the browser test will fail" >&2
  fi
}

case "${1:-main}" in
  setup) setup ;;
  main)
    setup
    "$PY" -m launch.planted --config=configs/planted_csae.py --workdir=runs/planted \
      --config.overwrite=True
    ;;
  test)
    setup
    shift || true
    export JAX_PLATFORMS=cpu
    "$PY" -m pytest -q --durations=15 "$@"
    ;;
  *) echo "usage: bash run.sh [main|test|setup]" >&2; exit 2 ;;
esac
