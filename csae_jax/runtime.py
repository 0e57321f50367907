"""What the program runs on, said once at startup, so nobody trains on CPU by accident.

Every launch script logs `startup_line()` first (backend, device kinds and counts, processes)
and takes `--require_backend` (cpu | gpu | tpu | accelerator; '' accepts anything), which
`require_backend` turns into a clear error before any file is written. The README's install
lines for a GPU node and a TPU VM name the setup extras (`.[gpu]`, `.[tpu]`) that bring the
accelerator builds of jaxlib.
"""
from __future__ import annotations

import collections

BACKENDS = ("", "cpu", "gpu", "tpu", "accelerator")


class BackendMismatch(ValueError):
  """The program runs on another backend than --require_backend asked for (a user error)."""


def device_summary() -> dict:
  """backend, process count and the kinds of devices (global and local counts)."""
  import jax
  devices = jax.devices()
  kinds = collections.Counter(getattr(d, "device_kind", d.platform) for d in devices)
  return {"backend": jax.default_backend(), "devices": len(devices),
          "local_devices": jax.local_device_count(), "processes": jax.process_count(),
          "kinds": dict(kinds)}


def startup_line(program: str) -> str:
  s = device_summary()
  kinds = ", ".join(f"{n} x {k}" for k, n in sorted(s["kinds"].items()))
  line = (f"{program} starting: JAX backend {s['backend']}, {s['devices']} device(s) ({kinds}), "
          f"{s['processes']} process(es), {s['local_devices']} local device(s)")
  if s["backend"] == "cpu":
    line += ("; running on CPU: for a GPU or TPU install the .[gpu] or .[tpu] extra (README, "
             "'Accelerators') and pass --require_backend=gpu|tpu to refuse CPU")
  return line


def require_backend(required: str, summary: dict | None = None) -> None:
  """Raise when the backend is not the one asked for ('' accepts any)."""
  if required not in BACKENDS:
    raise ValueError(f"--require_backend must be one of {BACKENDS[1:]} or empty, got {required!r}")
  if not required:
    return
  s = summary if summary is not None else device_summary()
  ok = (s["backend"] != "cpu") if required == "accelerator" else (s["backend"] == required)
  if not ok:
    raise BackendMismatch(
        f"--require_backend={required} but JAX runs on {s['backend']} with {s['devices']} "
        f"device(s) {s['kinds']}: install the accelerator build (pip install -e '.[gpu]' on a "
        "CUDA 12 node, '.[tpu]' on a TPU VM), check that the job was given the devices "
        "(CUDA_VISIBLE_DEVICES, SLURM --gpus-per-node), or drop the flag to run anyway")
