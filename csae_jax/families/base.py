"""The contract every SAE family follows (SPEC section 2), and pieces several families share.

A family is a module with:
  Config                      frozen dataclass (d, n, ...); `validate()` raises on bad values
  init(key, cfg, x_first)  -> params        pytree of float32 arrays (layout: conventions.py)
  init_state(cfg)          -> state         non-trainable arrays (thresholds, dead counters, ...)
  encode(params, state, x, cfg) -> codes    inference codes (B, n)
  decode(params, codes, cfg)    -> xhat
  loss(params, state, x, cfg, *, step, row_mask=None, target=None) -> (scalar, LossOutput)
  dense_activation(params, x, cfg) -> (B, n) ReLU of the pre-activation (parents, steering)
  fold_scale(params, state, s, cfg) -> (params, state) for raw activations x_raw = s * x
  reseed(key, params, atoms, restarts, iters, w) -> params   optional: the family's own k-means
                           re-seeding as a cascade level (default: level_kmeans.reseed)
  SPEC                     FamilySpec: the facts other modules read instead of comparing names
                           (docs/families.md says why each one exists)
`row_mask` (B,) restricts every mean to the marked rows (Level-2 dynamic masking, SPEC 3);
`target` is what is reconstructed (defaults to x; stop-gradient variants of the cascade set it).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from csae_jax import codes as codes_lib
from csae_jax import conventions as cv
from csae_jax import ops


class LossOutput(NamedTuple):
  """codes: the (B, n) training codes. active: (n,) bool, latents > 0 on some row in row_mask,
  or None (then readers reduce `codes`); the sparse path sets it from its entries, so the cascade's
  live mask never needs the dense codes (csae_jax/codes.py)."""
  metrics: dict[str, jax.Array]
  state: dict[str, jax.Array]
  codes: jax.Array
  active: jax.Array | None = None


@dataclasses.dataclass(frozen=True)
class BaseConfig:
  d: int
  n: int
  dead_tokens: int = 10_000_000   # window for "dead" (AuxK and the dead-fraction metric)
  adam_b1: float = 0.9

  def validate(self) -> None:
    cv.check_positive("d", self.d)
    cv.check_positive("n", self.n)
    cv.check_positive("dead_tokens", self.dead_tokens)

  def constrained_decoder(self) -> bool:
    """Whether W_dec rows are kept at unit norm (every family except ReLU's April-2024 form)."""
    return True

  def replace(self, **kw):
    return dataclasses.replace(self, **kw)


@dataclasses.dataclass(frozen=True)
class KConfig(BaseConfig):
  """Fields of the k-sparse families (TopK, BatchTopK, Matryoshka)."""
  k: int = 32
  k_anneal_steps: int = 0          # k goes linearly from k_anneal_from to k over these steps
  k_anneal_from: int | None = None  # None: d (the authors' release)
  aux_k: int | None = 512           # AuxK latents; None disables AuxK; min(d/2, #dead) is used
  aux_coef: float = 1.0 / 32
  sparse: str = "auto"              # auto | on | off: the sparse code path (csae_jax/sparse.py)
  compute_dtype: str = "float32"    # float32 | bfloat16: encoder matmul inputs (f32 accumulation)

  def validate(self) -> None:
    super().validate()
    cv.check_k("k", self.k, self.n)
    if self.sparse not in ("auto", "on", "off"):
      raise ValueError(f"sparse must be one of ('auto', 'on', 'off'), got {self.sparse!r}")
    if self.compute_dtype not in ("float32", "bfloat16"):
      raise ValueError(f"compute_dtype must be 'float32' or 'bfloat16', got {self.compute_dtype!r}")
    if self.aux_k is not None:
      cv.check_positive("aux_k", self.aux_k)
    if self.k_anneal_steps < 0:
      raise ValueError(f"k_anneal_steps must be >= 0, got {self.k_anneal_steps}")


def annealed_k(cfg: KConfig, step):
  """k at `step`: a Python int when not annealing, else a traced int32 (SPEC 3, k annealing)."""
  if cfg.k_anneal_steps <= 0 or step is None:
    return cfg.k
  start = min(cfg.k_anneal_from if cfg.k_anneal_from is not None else cfg.d, cfg.n)
  frac = jnp.clip(jnp.asarray(step, jnp.float32) / cfg.k_anneal_steps, 0.0, 1.0)
  return jnp.round(start + (cfg.k - start) * frac).astype(jnp.int32)


def threshold_state() -> dict[str, jax.Array]:
  """BatchTopK inference threshold; -1 means "not set yet"."""
  return {"threshold": jnp.array(-1.0, jnp.float32)}


def update_threshold(theta, codes, step, start: int = 1000, decay: float = 0.999):
  """theta <- decay theta + (1 - decay) min{positive code}; first value = that min (SPEC 2.3).

  codes: dense (B, n) or csae_jax.codes.Entries."""
  m = codes_lib.min_positive(codes)
  ok = jnp.isfinite(m) & (jnp.asarray(step) >= start)
  new = jnp.where(theta < 0, m, decay * theta + (1.0 - decay) * m)
  return jnp.where(ok, jax.lax.stop_gradient(new), theta)


def dead_state(cfg: BaseConfig) -> dict[str, jax.Array]:
  return {"tokens_since_fired": jnp.zeros((cfg.n,), jnp.int32)}


def auxk_loss(pre_relu, residual, w_dec, dead, aux_k: int, d: int, row_mask=None):
  """AuxK (SPEC 2.2): reconstruct the detached residual from the top dead latents, no bias.

  pre_relu: ReLU'd pre-activations (B, n), or a function returning them (the sparse path computes
  them only when something is dead); residual: detached x - xhat; dead: (n,) bool; row_mask:
  only these rows count (Level-2 dynamic masking), as in every other term.
  Uses the top min(d/2, aux_k) dead latents per token: with fewer dead latents than that, the
  non-dead entries are zero and drop out, which is the SPEC's min(d/2, #dead). 0 when nothing is
  dead (then lax.cond skips the extra decode entirely); NaN -> 0.
  """
  k_static = int(min(aux_k, w_dec.shape[0], max(d // 2, 1)))

  def compute(_):
    z = jnp.where(dead[None, :], pre_relu() if callable(pre_relu) else pre_relu, 0.0)
    keep = ops.row_topk_mask_static(z, k_static) & (z > 0)
    f_aux = z * jax.lax.stop_gradient(keep.astype(z.dtype))
    e = jax.lax.stop_gradient(residual)
    sq = jnp.sum(jnp.square(e - f_aux @ w_dec), axis=-1)
    if row_mask is None:
      num = jnp.sum(sq)
      den = jnp.sum(jnp.square(e - e.mean(0)))
    else:
      m = row_mask.astype(e.dtype)
      mean = (m[:, None] * e).sum(0) / jnp.maximum(m.sum(), 1.0)
      num = jnp.sum(m * sq)
      den = jnp.sum(m * jnp.sum(jnp.square(e - mean), axis=-1))
    ok = den > 0       # no rows / constant residual: 0, with finite gradients (double where)
    l_aux = num / jnp.where(ok, den, 1.0)
    return jnp.where(ok & jnp.isfinite(l_aux), l_aux, 0.0).astype(jnp.float32)

  return jax.lax.cond(jnp.any(dead), compute, lambda _: jnp.zeros((), jnp.float32), None)


def common_metrics(target, xhat, codes, state, cfg: BaseConfig, row_mask=None):
  m = cv.recon_metrics(target, xhat, codes, row_mask)
  m["dead_fraction"] = cv.dead_fraction(state["tokens_since_fired"], cfg.dead_tokens)
  return m


def linear_decode(params, codes, cfg=None):
  del cfg
  return codes @ params["W_dec"] + params["b_dec"]


def centered_matmul(x, b_dec, w):
  """(x - b_dec) @ w, computed as x @ w - b_dec @ w (equal to float32 round-off).

  Why: autodiff of (x - b_dec) @ w gets b_dec's gradient from the (B, d) cotangent of x - b_dec,
  a (B x n) @ (n x d) matmul; in this form it is -w @ (sum of the rows' cotangents), a
  matrix-vector product, and when x is data (level 1) nothing needs x's cotangent at all. That is
  one of the dense step's six B x d x n matmuls (docs/speed.md).
  """
  return x @ w - b_dec @ w


def centered_preact(params, x):
  """W_enc (x - b_dec) + b_enc, the pre-activation of the ReLU/TopK/BatchTopK families."""
  return centered_matmul(x, params["b_dec"], params["W_enc"]) + params["b_enc"]


def fold_linear_scale(params, state, s, extra_scaled=("b_enc",)):
  """Fold s into biases (b_dec and `extra_scaled`) and any threshold (SPEC 1)."""
  p = dict(params)
  p["b_dec"] = p["b_dec"] * s
  for name in extra_scaled:
    p[name] = p[name] * s
  st = dict(state)
  if "threshold" in st:
    st["threshold"] = jnp.where(st["threshold"] > 0, st["threshold"] * s, st["threshold"])
  return p, st



# ----------------------------------------------------------------------------- declared facts
SELECTIONS = ("dense", "row_topk", "batch_topk", "jump", "gate", "nearest")
HIERARCHIES = ("flat", "groups", "on_codes")


@dataclasses.dataclass(frozen=True)
class Latent:
  """Marks a parameter axis that indexes latents; `count` names the Config field giving its size."""
  axis: int
  count: str = "n"


# The layout of conventions.init_tied: W_enc (d, n), b_enc (n,), W_dec (n, d), b_dec (d,).
TIED_AXES = {"W_enc": Latent(1), "b_enc": Latent(0), "W_dec": Latent(0), "b_dec": None}


class SAELensLevel(NamedTuple):
  """One level in SAELens's names and orientation (csae_jax.export writes it)."""
  tensors: dict[str, np.ndarray]     # sae_weights.safetensors
  cfg: dict                          # extra top-level cfg.json fields (TopK's k, ...)
  metadata: dict                     # extra cfg.json["metadata"] fields


@dataclasses.dataclass(frozen=True)
class FamilySpec:
  """What the rest of the package needs to know about a family, declared by the family.

  name         the registry key
  display      the name tables and plots print
  selection    how codes are chosen from the pre-activation (SELECTIONS): "dense" (ReLU codes),
               "row_topk" (k per token), "batch_topk" (k x rows per batch in training, a threshold
               at inference), "jump" (learned per-latent threshold), "gate" (a separate gate path),
               "nearest" (one-hot on the nearest centre, vq)
  centred      the encoder reads x - b_dec (SAELens apply_b_dec_to_input)
  latent_axes  a tree shaped like the params: Latent(axis, count) on each axis that indexes
               latents, None on the others (the mesh splits latent axes over "model")
  hierarchy    how the family forms two levels on its own (HIERARCHIES): "flat" (it does not;
               pairs of flat SAEs are linked post hoc), "groups" (nested groups of one dictionary),
               "on_codes" (a second SAE on the codes of the first)
  cascade_level  it can be a level of a cascade (its params hold one W_dec of atoms)
  saelens_architecture  the SAELens architecture that computes the same inference codes, or None
               (no SAELens form: the native export only)
  saelens      (cfg, params, state) -> SAELensLevel for raw-activation params (None with no
               architecture); raises ValueError when the params cannot be written that way
  paper_options  options of the paper's flat baseline beyond n (and k, when k-sparse); None: the
               paper trains no flat baseline of this family
  table1       a method of the paper's Table 1 (the experiment grid trains and tabulates it);
               False for families that exist only as a cascade level option (vq)
  """
  name: str
  display: str
  selection: str
  centred: bool
  latent_axes: Mapping[str, Any]
  hierarchy: str = "flat"
  cascade_level: bool = True
  saelens_architecture: str | None = None
  saelens: Callable[..., SAELensLevel] | None = None
  paper_options: Mapping[str, Any] | None = None
  table1: bool = True

  def __post_init__(self):
    if self.selection not in SELECTIONS:
      raise ValueError(f"{self.name}: selection must be one of {SELECTIONS}, got "
                       f"{self.selection!r}")
    if self.hierarchy not in HIERARCHIES:
      raise ValueError(f"{self.name}: hierarchy must be one of {HIERARCHIES}, got "
                       f"{self.hierarchy!r}")
    if (self.saelens is None) != (self.saelens_architecture is None):
      raise ValueError(f"{self.name}: saelens and saelens_architecture go together")

  @property
  def k_sparse(self) -> bool:
    """Its Config has k, the number of codes kept per token (the experiments set k1 / k2)."""
    return self.selection in ("row_topk", "batch_topk")


def saelens_linear(params) -> dict[str, np.ndarray]:
  """W_enc, W_dec, b_dec, b_enc as float32 NumPy: the tensors every linear-encoder family writes."""
  return {k: np.asarray(params[k], np.float32) for k in ("W_enc", "W_dec", "b_dec", "b_enc")}
