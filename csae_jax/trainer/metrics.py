"""Metric writers: JSON lines, TensorBoard events (tensorboardX, no TensorFlow), progress line.

Only process 0 writes. Metric names keep the model's prefixes ("l1/fvu", "l2/live_atoms", ...),
so each cascade level has its own curves. A flat model's metrics carry no prefix; TensorBoard gets
them under "l1/" as well ("l1/fvu" next to "fvu"), so a flat run overlays with a cascade's Level 1.
The run's config goes to TensorBoard as text and as hparams (the HParams dashboard).
"""
from __future__ import annotations

import json
import logging as logging_std
import math
import pathlib
import sys
import time

from absl import logging

from csae_jax import fileio


def _finite_or_str(v: float):
  return v if math.isfinite(v) else str(v)


# Metrics of the whole run rather than of one level: never given a level prefix.
RUN_METRICS = ("lr", "grad_norm", "steps_per_s", "tokens_per_s")


def tensorboard_tags(metrics: dict[str, float]) -> dict[str, float]:
  """TensorBoard tags: a cascade's names as they are; a flat model's (no "/" anywhere) also under
  "l1/", the tag the same family has as a cascade's Level 1."""
  if any("/" in k for k in metrics):
    return dict(metrics)
  out = dict(metrics)
  out.update({f"l1/{k}": v for k, v in metrics.items() if k not in RUN_METRICS})
  return out


def _flat_hparams(config: dict, prefix: str = "") -> dict:
  """Scalars of a plain config as {dotted key: bool|int|float|str}; lists become strings."""
  out = {}
  for k, v in config.items():
    key = prefix + str(k)
    if isinstance(v, dict):
      out.update(_flat_hparams(v, key + "."))
    elif isinstance(v, (bool, int, float, str)):
      out[key] = v
    elif v is not None:
      out[key] = json.dumps(v, sort_keys=True)
  return out


HPARAM_METRICS = ("loss", "l1/fvu", "l1/l0", "l1/dead_fraction", "l2/fvu")


def write_config(tb, config: dict, step: int = 0) -> None:
  """The config as text (JSON) and as hparams with the headline metrics (tensorboardX)."""
  from tensorboardX.summary import hparams
  tb.add_text("config", "```\n" + json.dumps(config, indent=2, sort_keys=True) + "\n```", step)
  hp = _flat_hparams({k: v for k, v in config.items() if k not in ("distributed",)})
  exp, ssi, sei = hparams(hp, {m: 0.0 for m in HPARAM_METRICS})
  for summary in (exp, ssi, sei):
    tb.file_writer.add_summary(summary, step)


class MetricWriter:
  def __init__(self, metrics_path: pathlib.Path, tb_dir: pathlib.Path, resume_step: int,
               enabled: bool = True, config: dict | None = None):
    self.enabled = enabled
    self._tb = None
    if not enabled:
      return
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    if metrics_path.exists():   # drop lines written after the checkpoint we resume from
      kept = []
      for line in metrics_path.read_text().splitlines():
        try:
          if json.loads(line).get("step", 0) <= resume_step:
            kept.append(line)
        except json.JSONDecodeError:
          continue  # a line cut by a kill
      # atomic: a kill here must not lose the lines up to the checkpoint
      fileio.write_text_atomic(metrics_path, "".join(l + "\n" for l in kept))
    self._file = open(metrics_path, "a")
    from tensorboardX import SummaryWriter
    self._tb = SummaryWriter(str(tb_dir), purge_step=resume_step + 1 if resume_step else None)
    if config is not None and not resume_step:
      write_config(self._tb, config)

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self.enabled:
      return
    row = {"step": step, **{k: _finite_or_str(float(v)) for k, v in metrics.items()}}
    self._file.write(json.dumps(row, sort_keys=True) + "\n")
    self._file.flush()
    for k, v in tensorboard_tags(metrics).items():
      if math.isfinite(float(v)):
        self._tb.add_scalar(k, float(v), step)
    self._tb.flush()

  def close(self) -> None:
    if self.enabled:
      self._file.close()
      self._tb.close()


def _fmt_time(s: float) -> str:
  if not math.isfinite(s):
    return "?"
  s = int(s)
  return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress:
  """A carriage-return progress line on a terminal, absl logging lines otherwise."""

  def __init__(self, total: int, start: int, batch_size: int, mode: str = "auto",
               enabled: bool = True):
    self.total, self.start, self.batch_size = total, start, batch_size
    self.interactive = enabled and (mode == "always" or (mode == "auto" and sys.stderr.isatty()))
    self.enabled = enabled
    self.t0 = time.time()

  def rate(self, step: int) -> float:
    return (step - self.start) / max(time.time() - self.t0, 1e-9)

  def update(self, step: int, metrics: dict[str, float] | None = None, force_log=False) -> None:
    if not self.enabled:
      return
    r = self.rate(step)
    eta = (self.total - step) / r if r > 0 else float("inf")
    loss = "" if not metrics or "loss" not in metrics else f" loss {metrics['loss']:.4g}"
    line = (f"step {step}/{self.total} {r:.2f} step/s {r * self.batch_size:,.0f} tok/s "
            f"ETA {_fmt_time(eta)}{loss}")
    if self.interactive:
      sys.stderr.write("\r" + line + " " * 4)
      sys.stderr.flush()
    elif force_log:
      logging.info("%s", line)

  def close(self) -> None:
    if self.interactive:
      sys.stderr.write("\n")
      sys.stderr.flush()


class _LibraryInfoFilter(logging_std.Filter):
  """Drops INFO records from orbax/jax/tensorstore internals; warnings and errors still pass."""

  NOISY = ("/orbax/", "/jax/_src/", "/tensorstore/", "/etils/")
  # asyncio reports Orbax's failed writer tasks once more when they are collected ("Task
  # exception was never retrieved"): on a full disk that is the same error again.
  DISK_FULL_ECHOES = NOISY + ("/asyncio/",)

  def filter(self, record):
    noisy = any(part in record.pathname for part in self.NOISY)
    echo = any(part in record.pathname for part in self.DISK_FULL_ECHOES)
    if echo and (fileio.is_disk_full(Exception(record.getMessage()))
                  or (record.exc_info and fileio.is_disk_full(record.exc_info[1]))):
      return False   # Orbax logs each failed writer thread's traceback; the trainer says it once
    if record.levelno >= logging_std.WARNING:
      return True
    return not noisy


def quiet_library_logs() -> None:
  """Keep launch-script output to our own progress lines (call once from main)."""
  flt = _LibraryInfoFilter()
  for handler in logging_std.getLogger().handlers + logging_std.getLogger("absl").handlers:
    handler.addFilter(flt)
  logging_std.getLogger("absl").addFilter(flt)
