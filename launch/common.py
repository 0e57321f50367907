"""What every launch script does first: say what it runs on, and refuse the wrong backend.

`--require_backend=gpu|tpu|accelerator|cpu` (default: accept any) makes a script stop with one
line before it writes anything when JAX (or, for extraction, torch) runs elsewhere, so a job
queued for a GPU node never trains on CPU by accident (csae_jax/runtime.py, README
"Accelerators").
"""
from __future__ import annotations

import sys

from absl import flags

REQUIRE_BACKEND = flags.DEFINE_enum(
    "require_backend", "", ["", "cpu", "gpu", "tpu", "accelerator"],
    "Refuse to start unless the program runs on this backend ('' accepts any).")


def announce_jax(program: str) -> None:
  """Print the JAX startup line (backend, devices, processes) and apply --require_backend."""
  from csae_jax import cli
  from csae_jax import runtime
  print(runtime.startup_line(program), file=sys.stderr, flush=True)
  with cli.user_errors_exit(program):
    runtime.require_backend(REQUIRE_BACKEND.value)


def announce_torch(program: str, device: str) -> None:
  """The same for the PyTorch side (extraction): torch version, the requested device, CUDA."""
  import torch
  from csae_jax import runtime
  cuda = torch.cuda.is_available()
  count = torch.cuda.device_count() if cuda else 0
  names = sorted({torch.cuda.get_device_name(i) for i in range(count)})
  backend = "gpu" if device.startswith("cuda") else "cpu"
  line = (f"{program} starting: torch {torch.__version__}, device {device}; CUDA "
          + (f"available, {count} GPU(s) ({', '.join(names)})" if cuda else "not available"))
  if backend == "cpu":
    line += "; running on CPU (pass --device=cuda on a GPU node)"
  print(line, file=sys.stderr, flush=True)
  summary = {"backend": backend, "devices": count if backend == "gpu" else 1,
             "kinds": {n: 1 for n in names} if backend == "gpu" else {"cpu": 1}}
  if backend == "gpu" and not cuda:
    raise runtime.BackendMismatch(f"--device={device} but torch sees no CUDA device")
  runtime.require_backend(REQUIRE_BACKEND.value, summary)
