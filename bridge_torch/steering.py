"""Steering by clamping Level-1 atoms inside the model (SPEC section 5).

Hook, on the output of the module the SAE was trained on, per token:
  post = dense ReLU activation of the SAE (no top-k, no threshold);  post[:, A] = c
  reconstruction mode (the paper):   output = W_dec^T post + b_dec
  error-preserving mode (option):    output = x + (steered reconstruction - clean reconstruction)
                                            = x + (c - post[:, A]) W_dec[A]
Without a clamp the hook passes the output through untouched, so attaching it changes nothing
until a clamp is set; in error-preserving mode an empty clamp adds an exact zero.

Also here: the concept scale sigma_A, clusters (alive children of a Level-2 unit) and arms.
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from bridge_torch.sae import TorchExport, TorchSAE

MODES = ("reconstruction", "error_preserving")


class WidthMismatch(ValueError):
  """The export's d is not the hooked module's output width."""


# ----------------------------------------------------------------------------- module paths
def resolve_module(model: nn.Module, path: str) -> nn.Module:
  """model.get_submodule(path) with an error listing the closest module names."""
  try:
    return model.get_submodule(path)
  except AttributeError:
    names = [n for n, _ in model.named_modules() if n]
    close = difflib.get_close_matches(path, names, n=5, cutoff=0.5)
    raise ValueError(f"module path {path!r} not found in {type(model).__name__}; closest: "
                     f"{close or names[:5]}") from None


def _first_tensor(output):
  if isinstance(output, torch.Tensor):
    return output
  if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
    return output[0]
  raise TypeError(f"cannot steer a module whose output is {type(output).__name__}; expected a "
                  "tensor or a tuple whose first element is the hidden states")


def _replace_first(output, new):
  if isinstance(output, torch.Tensor):
    return new
  return type(output)((new,) + tuple(output[1:])) if isinstance(output, tuple) else \
      [new] + list(output[1:])


class _ProbeDone(Exception):
  pass


def probe_output_width(model: nn.Module, module_path: str, run_forward: Callable[[], object],
                       channel_axis: int = -1) -> int:
  """Width of the module's output, from one forward pass stopped right after the module runs."""
  module = resolve_module(model, module_path)
  seen = {}

  def grab(_mod, _inp, out):
    seen["shape"] = tuple(_first_tensor(out).shape)
    raise _ProbeDone

  handle = module.register_forward_hook(grab)
  try:
    with torch.no_grad():
      run_forward()
  except _ProbeDone:
    pass
  finally:
    handle.remove()
  if "shape" not in seen:
    raise RuntimeError(f"module {module_path!r} did not run during the probe forward pass")
  return int(seen["shape"][channel_axis])


def check_width(sae: TorchSAE, model: nn.Module, module_path: str, run_forward,
                channel_axis: int = -1) -> int:
  """Refuse an export whose d differs from the module's output width (before any generation)."""
  width = probe_output_width(model, module_path, run_forward, channel_axis)
  if width != sae.d:
    raise WidthMismatch(f"the SAE export has d={sae.d} but module {module_path!r} outputs width "
                        f"{width}: the export was trained on another layer or model")
  return width


# ----------------------------------------------------------------------------- the hook
@dataclasses.dataclass
class Clamp:
  atoms: tuple[int, ...]
  value: float


class SteeringHook:
  """A forward hook clamping atoms of `sae` (SPEC 5). Use `attach`, then `set_clamp` / `clear`.

  channel_axis: where d lives in the module output (-1 for transformers; 1 for NCHW CNNs).
  token_mask_fn: optional callable(hidden) -> bool mask over the token positions to steer (e.g.
    image tokens only in a language layer); other positions pass through.
  """

  def __init__(self, sae: TorchSAE, *, mode: str = "reconstruction", channel_axis: int = -1,
               token_mask_fn: Callable[[torch.Tensor], torch.Tensor] | None = None):
    if mode not in MODES:
      raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    self.sae = sae
    self.mode = mode
    self.channel_axis = channel_axis
    self.token_mask_fn = token_mask_fn
    self.clamp: Clamp | None = None
    self.handle = None
    self.calls = 0

  def set_clamp(self, atoms: Sequence[int], value: float) -> None:
    atoms = tuple(int(a) for a in atoms)
    bad = [a for a in atoms if not 0 <= a < self.sae.n]
    if bad:
      raise ValueError(f"atoms {bad[:5]} are outside the dictionary (n={self.sae.n})")
    if not np.isfinite(value):
      raise ValueError(f"clamp value must be finite, got {value}")
    self.clamp = Clamp(atoms, float(value))

  def clear(self) -> None:
    self.clamp = None

  def steer(self, h: torch.Tensor) -> torch.Tensor:
    """Apply the clamp to hidden states h (any shape with d on channel_axis)."""
    if self.clamp is None:
      return h
    moved = torch.movedim(h, self.channel_axis, -1)
    if moved.shape[-1] != self.sae.d:
      raise WidthMismatch(f"hooked output has width {moved.shape[-1]}, the SAE expects "
                          f"d={self.sae.d}")
    x = moved.reshape(-1, self.sae.d).to(torch.float32)
    atoms = list(self.clamp.atoms)
    post = self.sae.dense_activation(x)
    w_dec = self.sae.atoms()
    if self.mode == "error_preserving":
      if atoms:
        delta = (self.clamp.value - post[:, atoms]) @ w_dec[atoms]
      else:
        delta = torch.zeros_like(x)
      out = x + delta
    else:
      post = post.clone()
      post[:, atoms] = self.clamp.value
      out = self.sae.decode(post)
    if self.token_mask_fn is not None:
      mask = self.token_mask_fn(moved).reshape(-1, 1).to(out.device)
      out = torch.where(mask, out, x)
    out = out.to(h.dtype).reshape(moved.shape)
    return torch.movedim(out, -1, self.channel_axis)

  def __call__(self, module, inputs, output):
    self.calls += 1
    if self.clamp is None:
      return output
    return _replace_first(output, self.steer(_first_tensor(output)))

  def attach(self, model: nn.Module, module_path: str, run_forward=None) -> "SteeringHook":
    """Register on model.<module_path>; with run_forward, first check the width (SPEC 5)."""
    if self.handle is not None:
      raise RuntimeError("hook is already attached; call detach() first")
    if run_forward is not None:
      check_width(self.sae, model, module_path, run_forward, self.channel_axis)
    self.handle = resolve_module(model, module_path).register_forward_hook(self)
    return self

  def detach(self) -> None:
    if self.handle is not None:
      self.handle.remove()
      self.handle = None


# ----------------------------------------------------------------------------- statistics
@torch.no_grad()
def image_codes(sae: TorchSAE, read_tokens: Callable[[int, int], np.ndarray],
                token_offsets: np.ndarray, chunk_tokens: int = 4096,
                alive_top: int = 12, alive_min: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
  """(v, alive): v[i, j] = mean over image i's tokens of unit j's inference code (SPEC 4);
  alive[j] = unit j is in some token's dense top-`alive_top` with value > alive_min."""
  offsets = np.asarray(token_offsets, np.int64)
  n_img = len(offsets) - 1
  v = np.zeros((n_img, sae.n), np.float32)
  alive = np.zeros(sae.n, bool)
  img = 0
  start = int(offsets[0])
  end_all = int(offsets[-1])
  while start < end_all:
    # whole images per chunk, so each image's mean comes from one chunk
    stop_img = int(np.searchsorted(offsets, start + chunk_tokens, side="right") - 1)
    stop_img = max(stop_img, img + 1)
    stop = int(offsets[stop_img])
    x = torch.as_tensor(np.asarray(read_tokens(start, stop), np.float32))
    codes = sae.encode(x)
    dense = sae.dense_activation(x)
    top = torch.topk(dense, min(alive_top, sae.n), dim=-1)
    alive[top.indices[top.values > alive_min].unique().numpy()] = True
    seg = torch.as_tensor(np.repeat(np.arange(stop_img - img), np.diff(offsets[img:stop_img + 1])))
    sums = torch.zeros(stop_img - img, sae.n).index_add_(0, seg, codes)
    counts = torch.as_tensor(np.maximum(np.diff(offsets[img:stop_img + 1]), 1), dtype=torch.float32)
    v[img:stop_img] = (sums / counts[:, None]).numpy()
    img, start = stop_img, stop
  return v, alive


def top_images(v: np.ndarray, atoms: Sequence[int], top: int = 10) -> np.ndarray:
  """Images ranked by the sum over A of their mean token activation (SPEC 5, Scale)."""
  score = v[:, list(atoms)].sum(1)
  order = np.argsort(-score, kind="stable")
  return order[:top]


def concept_scale(v: np.ndarray, atoms: Sequence[int], level1_threshold: float,
                  top: int = 10, floor: float = 1.0) -> float:
  """sigma_A: mean of the per-image mean activations of A's atoms above 0.5 theta' over the
  cluster's top-`top` images, theta' = max(Level-1 threshold, floor); fallback theta' (SPEC 5)."""
  theta = max(float(level1_threshold), floor)
  vals = v[np.ix_(top_images(v, atoms, top), list(atoms))]
  above = vals[vals > 0.5 * theta]
  return float(above.mean()) if above.size else theta


def clusters(export: TorchExport, alive: np.ndarray,
             min_children: int = 2) -> dict[int, np.ndarray]:
  """Level-2 unit -> its alive Level-1 children, for units with >= min_children (SPEC 5)."""
  if not export.parents:
    raise ValueError("this export has no Level-2 parent map (a flat SAE); steering clusters need "
                     "a cascade export")
  parents = export.parents[0].numpy()
  out = {}
  for r in np.unique(parents[parents >= 0]):
    kids = np.flatnonzero((parents == r) & alive)
    if len(kids) >= min_children:
      out[int(r)] = kids
  return out


def choose_clusters(candidates: dict[int, np.ndarray], num: int, seed: int,
                    given: Sequence[int] | None = None) -> list[int]:
  """Given units (checked), or `num` drawn at random with `seed` (SPEC 5, 10 in the paper)."""
  if given:
    bad = [u for u in given if u not in candidates]
    if bad:
      raise ValueError(f"Level-2 units {bad} are not clusters with >= 2 alive children; "
                       f"candidates: {sorted(candidates)[:20]}")
    return [int(u) for u in given]
  units = sorted(candidates)
  if not units:
    raise ValueError("no Level-2 unit has >= 2 alive children; train longer or lower "
                     "min_children")
  rng = np.random.default_rng(seed)
  return [int(u) for u in rng.choice(units, size=min(num, len(units)), replace=False)]


@dataclasses.dataclass
class Arms:
  """Atom sets per arm for one cluster (SPEC 5, Arms); matryoshka uses another SAE."""
  cluster: tuple[int, ...]
  best_child: tuple[int, ...]
  rand1: tuple[int, ...]
  matryoshka: tuple[int, ...] | None = None


def make_arms(v: np.ndarray, atoms: Sequence[int], alive: np.ndarray, seed: int,
              v_matryoshka: np.ndarray | None = None, top: int = 10) -> Arms:
  """best_child: the atom of A with the highest mean code over the cluster's top images;
  rand1: one random alive atom outside A (fixed seed); matryoshka: the |A| Matryoshka atoms with
  the lowest mean activation rank on the cluster's top images."""
  atoms = [int(a) for a in atoms]
  tops = top_images(v, atoms, top)
  score = v[np.ix_(tops, atoms)].mean(0)
  best = atoms[int(np.argmax(score))]
  pool = np.setdiff1d(np.flatnonzero(alive), atoms)
  if pool.size == 0:
    pool = np.flatnonzero(alive)
  rand = int(np.random.default_rng(seed).choice(pool))
  mat = None
  if v_matryoshka is not None:
    ranks = np.argsort(np.argsort(-v_matryoshka[tops], axis=1, kind="stable"), axis=1)
    mat = tuple(int(a) for a in np.argsort(ranks.mean(0), kind="stable")[:len(atoms)])
  return Arms(tuple(atoms), (best,), (rand,), mat)
