r"""SAELens's training step, timed the way its SAETrainer runs it (for bench/train_step.py).

Run with the Python of an environment where SAELens is installed beside torch 2.13.0 (SAELens
pulls ~50 packages, so keep it out of the project's venv):
  /path/to/saelens-venv/bin/python bench/saelens_step.py --B 4096 --d 1024 --n 8192 --k 32

The one program on argparse, not absl, and run as a file: it runs in that foreign interpreter,
which has neither absl nor this project installed (bench/train_step.py starts it by path).

One step = training_forward_pass + backward + clip_grad_norm_(1.0) + Adam step + zero_grad +
the trainer's fired-latent bookkeeping. Prints one JSON object: {family: seconds per step}.
Families without a SAELens architecture (P-annealing, Stacked, the cascade) are absent.
"""
import argparse
import json
import sys
import time

import torch

ARCHS = {  # our family -> (SAELens training architecture, extra config fields)
    "relu": ("standard", dict(l1_coefficient=5.0)),
    "topk": ("topk", dict(k=None)),
    "batchtopk": ("batchtopk", dict(k=None)),
    "jumprelu": ("jumprelu", dict(l0_coefficient=1.0)),
    "gated": ("gated", dict(l1_coefficient=5.0)),
    "matryoshka": ("matryoshka_batchtopk", dict(k=None, matryoshka_widths=None)),
}


def time_family(name, B, d, n, k, reps):
  from sae_lens.registry import get_sae_training_class
  from sae_lens.saes.sae import TrainStepInput
  arch, extra = ARCHS[name]
  sae_cls, cfg_cls = get_sae_training_class(arch)
  fields = dict(extra)
  if "k" in fields:
    fields["k"] = k
  if "matryoshka_widths" in fields:
    fields["matryoshka_widths"] = [n // 2, n]
  cfg = cfg_cls(d_in=d, d_sae=n, dtype="float32", device="cpu", **fields)
  sae = sae_cls(cfg)
  opt = torch.optim.Adam(sae.parameters(), lr=1e-4, betas=(0.9, 0.999))
  coeffs = {key: (v.value if hasattr(v, "value") else v) for key, v in
            sae.get_coefficients().items()}
  x = torch.randn(B, d)
  since_fired = torch.zeros(n)

  def step(i):
    out = sae.training_forward_pass(TrainStepInput(
        sae_in=x, coefficients=coeffs, dead_neuron_mask=since_fired > 1e9, n_training_steps=i,
        is_logging_step=False))
    with torch.no_grad():
      fired = out.feature_acts.bool().float().sum(-2).bool()
      since_fired.add_(1)
      since_fired[fired] = 0
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
    opt.step()
    opt.zero_grad()

  step(0)
  t0 = time.perf_counter()
  for i in range(reps):
    step(i + 1)
  return (time.perf_counter() - t0) / reps


def main():
  ap = argparse.ArgumentParser()
  for name, default in (("B", 4096), ("d", 1024), ("n", 8192), ("k", 32), ("reps", 3)):
    ap.add_argument(f"--{name}", type=int, default=default)
  ap.add_argument("--families", default=",".join(ARCHS))
  a = ap.parse_args()
  out = {}
  for name in a.families.split(","):
    if name in ARCHS:
      out[name] = time_family(name, a.B, a.d, a.n, a.k, a.reps)
      print(f"{name}: {out[name]:.3f} s/step", file=sys.stderr, flush=True)
  print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                    "seconds_per_step": out}))


if __name__ == "__main__":
  main()
