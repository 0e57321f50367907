"""What the experiment runner says while it works: the plan (methods, runs, steps), one line per
trained run and per evaluation with an ETA, and the paths of what it wrote (issue 11, item 3).

The ETA is measured, not guessed: after the first trained run the seconds per training step
(compilation included, so it errs long) times the steps still to train, plus the mean evaluation
time so far times the evaluations still to do.
"""
from __future__ import annotations

import os
import time

from absl import logging


def _fmt_s(s: float) -> str:
  s = int(round(s))
  return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else \
      f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Progress:
  """Plan and progress lines of one experiment (stdout, flushed, and the absl log)."""

  def __init__(self, to_train: list[str], reused: list[str], to_eval: list[str],
               cached: list[str], steps: int, batch_size: int, say=None):
    self.to_train, self.reused = list(to_train), list(reused)
    self.to_eval, self.cached = list(to_eval), list(cached)
    self.steps, self.batch_size = int(steps), int(batch_size)
    self.say = say or _say
    self.trained, self.evaluated = 0, 0
    self.train_s, self.eval_s = 0.0, 0.0
    self.t0 = time.time()

  def plan(self, methods, ablations) -> None:
    self.say(f"plan: methods {', '.join(methods) or '-'}; ablations {', '.join(ablations) or '-'}")
    self.say(f"plan: train {len(self.to_train)} runs x {self.steps} steps (batch "
             f"{self.batch_size}): {', '.join(self.to_train) or '-'}"
             + (f"; reuse {len(self.reused)} finished: {', '.join(self.reused)}"
                if self.reused else ""))
    self.say(f"plan: evaluate {len(self.to_eval)}: {', '.join(self.to_eval) or '-'}"
             + (f"; cached {len(self.cached)}: {', '.join(self.cached)}" if self.cached else ""))

  def eta_s(self) -> float | None:
    """Seconds left, from the measured pace; None while a kind of work left is unmeasured."""
    left_train = len(self.to_train) - self.trained
    left_eval = len(self.to_eval) - self.evaluated
    if (left_train and not self.trained) or (left_eval and not self.evaluated):
      return None
    t = self.train_s / self.trained * left_train if left_train else 0.0
    return t + (self.eval_s / self.evaluated * left_eval if left_eval else 0.0)

  def _eta(self) -> str:
    eta = self.eta_s()
    if eta is not None:
      return f"ETA {_fmt_s(eta)}"
    first = "run" if len(self.to_train) > self.trained and not self.trained else "evaluation"
    return f"ETA after the first {first}"

  def start_run(self, run: str) -> None:
    self.say(f"[train {self.trained + 1}/{len(self.to_train)}] {run}: {self.steps} steps ...")

  def end_run(self, run: str, seconds: float) -> None:
    self.trained += 1
    self.train_s += seconds
    self.say(f"[train {self.trained}/{len(self.to_train)}] {run} done in {_fmt_s(seconds)} "
             f"({self.steps / max(seconds, 1e-9):.1f} steps/s); {self._eta()}")

  def end_eval(self, method: str, seconds: float, hms_mean: float) -> None:
    self.evaluated += 1
    self.eval_s += seconds
    self.say(f"[eval {self.evaluated}/{len(self.to_eval)}] {method}: HMS mean {hms_mean:.4f} "
             f"({_fmt_s(seconds)}); {self._eta()}")

  def wrote(self, workdir: str) -> list[str]:
    """Lists what the experiment wrote (tables, plots, browser, results) with full paths."""
    lines = [f"done in {_fmt_s(time.time() - self.t0)}; results in {os.path.abspath(workdir)}"]
    for sub, what in (("tables", "tables"), ("plots", "plots")):
      d = os.path.join(workdir, sub)
      if os.path.isdir(d):
        files = sorted(f for f in os.listdir(d) if not f.startswith("."))
        lines.append(f"  {what}: {os.path.abspath(d)}/ ({', '.join(files)})")
    index = os.path.join(workdir, "browser", "index.html")
    if os.path.isfile(index):
      lines.append(f"  browser: {os.path.abspath(index)}")
    lines.append(f"  runs: {os.path.abspath(os.path.join(workdir, 'runs'))}/ (TensorBoard: "
                 f"tensorboard --logdir {os.path.abspath(os.path.join(workdir, 'runs'))})")
    for line in lines:
      self.say(line)
    return lines


def _say(msg: str) -> None:
  logging.info(msg)
  print(msg, flush=True)
