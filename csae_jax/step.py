"""A pure training step shared by every method (SPEC section 1), and a simple single-device loop.

train_step(model, optimizer, state, x) -> (state, metrics) is a pure function of the train state
and one batch: projection of decoder gradients, global clip 1.0, Adam, then unit-norm decoders.
The sharded, checkpointing trainer (csae_jax/trainer) jit-compiles this same step over a mesh.
"""
from __future__ import annotations

import functools
import time
from typing import Callable, Iterable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from absl import logging

from csae_jax import conventions as cv
from csae_jax import coupling
from csae_jax.models import Model


class TrainState(NamedTuple):
  step: jax.Array
  params: object
  model_state: object
  opt_state: object


def make_optimizer(model: Model, total_steps: int, lr: float | None = None,
                   warmup_steps: int = 1000, decay_start_frac: float = 0.8,
                   b1: float | None = None, b2: float = 0.999, clip_norm: float = 1.0,
                   eps: float = 1e-8):
  peak = cv.default_lr(model.n) if lr is None else lr
  schedule = cv.lr_schedule(peak, total_steps, warmup_steps, decay_start_frac)
  opt = cv.make_optimizer(schedule, model.decoder_mask, b1=model.adam_b1 if b1 is None else b1,
                          b2=b2, clip_norm=clip_norm, start_steps=model.adam_start_steps(),
                          eps=eps)
  return opt, schedule


def init_train_state(model: Model, optimizer, key, x_first) -> TrainState:
  params, mstate = model.init(key, x_first)
  params = cv.renormalize_decoders(params, model.decoder_mask(params))
  return TrainState(jnp.asarray(0, jnp.int32), params, mstate, optimizer.init(params))


def train_step(model: Model, optimizer, schedule, ts: TrainState, x) -> tuple[TrainState, dict]:
  params = model.pre_step(ts.params, ts.step, ts.model_state)

  (loss, out), grads = coupling.value_and_grad(model, params, ts.model_state, x, ts.step)
  updates, opt_state = optimizer.update(grads, ts.opt_state, params)
  new_params = optax.apply_updates(params, updates)
  new_params = cv.renormalize_decoders(new_params, model.decoder_mask(new_params))
  metrics = dict(out.metrics)
  metrics["grad_norm"] = optax.global_norm(grads)
  metrics["lr"] = schedule(ts.step)
  return TrainState(ts.step + 1, new_params, out.state, opt_state), metrics


def make_jitted_step(model: Model, optimizer, schedule) -> Callable:
  return jax.jit(functools.partial(train_step, model, optimizer, schedule), donate_argnums=(0,))


def progress_line(step: int, steps: int, metrics: dict, seconds: float) -> str:
  """'fit: step 50/200 (25%), 12.3 step/s, ETA 12s, loss 0.21'; the rate includes compilation."""
  rate = step / max(seconds, 1e-9)
  eta = (steps - step) / rate if rate > 0 else float("inf")
  loss = f", loss {metrics['loss']:.4g}" if "loss" in metrics else ""
  return (f"fit: step {step}/{steps} ({100 * step // max(steps, 1)}%), {rate:.1f} step/s, "
          f"ETA {eta:.0f}s{loss}")


def _log_progress(step: int, metrics: dict, *, steps: int, t0: float) -> None:
  logging.info("%s", progress_line(step, steps, metrics, time.time() - t0))


def fit(model: Model, batches: Iterable, steps: int, *, key, lr=None, warmup_steps=1000,
        log_every: int | None = None, log_fn: Callable[[int, dict], None] | None = None):
  """Train for `steps` batches on one device; returns (TrainState, last metrics).

  Progress: log_fn(step, metrics) every `log_every` steps and at the end (default: ten times per
  run, an absl INFO line with rate and ETA; log_every=0 is silent).
  """
  if log_every is None:
    log_every = max(1, steps // 10)
  if log_fn is None and log_every:
    log_fn = functools.partial(_log_progress, steps=steps, t0=time.time())
  it = iter(batches)
  first = next(it)
  cv.check_activations(first, model.d, "training batch")
  opt, schedule = make_optimizer(model, steps, lr=lr, warmup_steps=warmup_steps)
  ts = init_train_state(model, opt, key, first)
  step_fn = make_jitted_step(model, opt, schedule)
  metrics, x, t0 = {}, first, time.time()
  for i in range(steps):
    if i > 0:
      x = next(it)
    ts, metrics = step_fn(ts, x)
    if log_fn is not None and log_every and ((i + 1) % log_every == 0 or i + 1 == steps):
      m = {k: float(v) for k, v in metrics.items()}
      m["tokens_per_s"] = (i + 1) * x.shape[0] / max(time.time() - t0, 1e-9)
      log_fn(i + 1, m)
  return ts, {k: float(v) for k, v in metrics.items()}
