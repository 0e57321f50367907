"""Sparse code path of the k-sparse families (TopK, BatchTopK, Matryoshka; SPEC 2.2, 2.3, 2.7).

The dense step spends three (B x d x n) matmuls on a code with k << n non-zeros per row: the
encoder forward, the decoder forward and the two weight gradients. Here only the encoder forward
stays dense, and without gradient: it picks the winners. The winners' values are recomputed with
gradient from gathered rows (one d-long dot product each), the decoder sums gathered atoms per row
(a segment sum), and autodiff turns the gathers into scatter-adds, so both weight gradients touch
only the K = k_max * B winning entries (docs/speed.md).

Selection keeps the dense path's answer, as a flat list of winners of static size K: the batch
selection ranks block maxima (select_batch, exact for any distribution of the winners over rows),
per-row TopK each row's top-c candidates. When a static bound fails (k annealing down from d, a
saturated TopK row, a tie) the step falls back to the dense computation inside lax.cond, so the
result never depends on the bound.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from csae_jax import codes as codes_lib
from csae_jax import ops

sg = lax.stop_gradient

SPARSE_MODES = ("auto", "on", "off")
# Candidates per row, as in batchtopk.ROW_CAP_*: 4 x the target k, at least 16.
ROW_CAP_FACTOR = 4
ROW_CAP_MIN = 16
# auto: sparse when the candidates are at most this fraction of the dictionary and k / n is at
# most AUTO_MAX_K_FRACTION. The gathers and segment sums move K x d = B k d floats at memory speed
# while the dense matmuls run at matmul speed: measured (docs/speed.md, B 4096, d 1024, n 8192,
# jemalloc) BatchTopK's sparse step is 1.9x faster than the dense one at k 32, 1.4x at k 64 and
# even at k 128 (k / n = 1/64); at k 256 its K x d temporaries (4 GB each) ran out of memory.
AUTO_MAX_FRACTION = 0.25
AUTO_MAX_K_FRACTION = 1 / 128


def check_mode(mode: str) -> None:
  if mode not in SPARSE_MODES:
    raise ValueError(f"sparse must be one of {SPARSE_MODES}, got {mode!r}")


def candidates(cfg, per_row: bool) -> int:
  """Static per-row candidate count c: k for a fixed-k TopK, else max(16, 4 k)."""
  if per_row and cfg.k_anneal_steps <= 0:
    return min(cfg.k, cfg.n)
  return min(max(ROW_CAP_MIN, ROW_CAP_FACTOR * cfg.k), cfg.n)


def enabled(cfg, per_row: bool) -> bool:
  """`sparse` option: on | off | auto (k / n small enough, and not on TPU where gathers are
  slow)."""
  mode = getattr(cfg, "sparse", "off")
  if mode == "off":
    return False
  if mode == "on":
    return True
  return (jax.default_backend() != "tpu"
          and candidates(cfg, per_row) <= AUTO_MAX_FRACTION * cfg.n
          and cfg.k <= AUTO_MAX_K_FRACTION * cfg.n)


def preact(params, x, compute_dtype=jnp.float32, bias: bool = True):
  """W_enc (x - b_dec) + b_enc with matmul inputs in compute_dtype, float32 accumulation.

  bias=False leaves b_enc out: the batch selection adds it inside its own passes, so the (B, n)
  sum is never written (one write and read of the scores, ~14 ms per step at the paper's Level-2
  shape, docs/speed.md).
  """
  xc = (x - params["b_dec"]).astype(compute_dtype)
  w = params["W_enc"].astype(compute_dtype)
  out = jnp.dot(xc, w, preferred_element_type=jnp.float32)
  return out + params["b_enc"] if bias else out


# ----------------------------------------------------------------------------- selection
def masked_scores(pre, row_mask=None):
  """ReLU(pre), and -1 on rows outside row_mask (negative bits: never counted, never kept).

  Per-row TopK takes these scores as they are: one materialised pass, which its candidates and
  the winners' values read. The batch selection (select_batch) needs no such pass: it applies
  the ReLU and the mask to block maxima.
  """
  zz = jnp.maximum(pre, 0.0)
  if row_mask is not None:
    zz = jnp.where(row_mask[:, None], zz, -1.0)
  return zz


BLOCK = 16


def row_top_k(z, c: int):
  """lax.top_k(z, c) by way of block maxima: the same values (and, without ties, indices).

  XLA:CPU's TopK scans every score of a row (53 ms for 3840 x 10000, c 16); here each row's
  blocks of BLOCK scores are reduced to their maxima (a plain reduction), the c best blocks are
  ranked, and the c best scores are taken among their c * BLOCK members (23 ms). Exact: each of a
  row's top-c scores lies in a block whose maximum is at least the c-th score, and at most c
  blocks have one (docs/speed.md). Rows too short for blocks to pay use lax.top_k directly.
  """
  r, n = z.shape
  if n % BLOCK or n < 4 * BLOCK * c:
    return lax.top_k(z, c)
  block_max = z.reshape(r, n // BLOCK, BLOCK).max(-1)
  _, blocks = lax.top_k(block_max, c)
  cols = (blocks[:, :, None] * BLOCK + jnp.arange(BLOCK, dtype=blocks.dtype)).reshape(r, c * BLOCK)
  vals, pos = lax.top_k(jnp.take_along_axis(z, cols, axis=1), c)
  return vals, jnp.take_along_axis(cols, pos, axis=1)


def select_rows(z, k, c: int):
  """Per-row top-k among the candidates of scores z = masked_scores(...): (vals, idx, keep (B,
  c), fits)."""
  vals, idx = row_top_k(z, c)
  keep = (jnp.arange(c)[None, :] < k) & (vals > 0)
  fits = jnp.asarray(k, jnp.int32) <= c
  return vals, idx, keep, fits


def _block_size(n: int) -> int:
  """The largest divisor of n that is at most BLOCK (blocks must tile a row exactly)."""
  return max(b for b in range(1, BLOCK + 1) if n % b == 0)


def _bits(v):
  return lax.bitcast_convert_type(v, jnp.int32)


def _kth_largest(v, k_total):
  """(k_total-th largest value of the non-negative float32 v, as int32 bits; bits of v)."""
  bits = _bits(v)
  return ops.kth_largest_bits_union([bits], k_total), bits


def _gather_groups(groups, flags, capacity: int):
  """Rows of `groups` (G, s) where `flags` (G,) is set, as a static (capacity, s) array (-1 past
  the count), their indices, and the count."""
  count = jnp.sum(flags, dtype=jnp.int32)
  idx = jnp.nonzero(flags, size=capacity, fill_value=0)[0].astype(jnp.int32)
  got = take_rows(groups, idx)
  return jnp.where((jnp.arange(capacity) < count)[:, None], got, -1.0), idx, count


def select_batch(pre, k, row_mask=None, capacity: int | None = None, bias=None):
  """Batch top-(k * n_rows) of relu(pre + bias) over the rows in row_mask, as a flat entry list:
  (rows, cols, valid, fits). Exact, and without sorting or a full-width top-k. bias: optional
  (n,), added inside the block-maximum pass and to the gathered scores only.

  Three rounds of the same argument (docs/speed.md, "Selection by block maxima"): a row's scores
  are cut into blocks of BLOCK, their maxima into superblocks of BLOCK blocks. The K-th largest
  superblock maximum t_s is at most the K-th largest block maximum t_b (the K superblocks above
  t_s hold K distinct blocks that reach it), which is at most the K-th largest score t. So every
  block that reaches t_b lies in one of the K superblocks that reach t_s, and every winner in one
  of the K blocks that reach t_b: each round ranks K x BLOCK gathered values instead of B x n.
  fits is False (the caller takes the dense path) on a tie at any of the three thresholds (more
  than `capacity` groups reach it, or more than K scores reach t) or when fewer than K scores are
  positive; pre may hold masked scores (masked_scores) as well as raw pre-activations.
  """
  b, n = pre.shape
  s = _block_size(n)
  n_rows = b if row_mask is None else jnp.sum(row_mask, dtype=jnp.int32)
  k_total = jnp.asarray(n_rows * k, jnp.int32)
  capacity = b * k if capacity is None else capacity
  nb = n // s
  blocks = pre.reshape(b, nb, s)
  if bias is not None:
    bias = bias.reshape(nb, s)
    blocks = blocks + bias
  # Block maxima of the scores: max(relu(p)) = relu(max(p)); masked rows -1 (never counted).
  bmax = jnp.maximum(blocks.max(-1), 0.0)
  if row_mask is not None:
    bmax = jnp.where(row_mask[:, None], bmax, -1.0)
  nbp = -(-nb // BLOCK) * BLOCK
  bmax = jnp.pad(bmax, ((0, 0), (0, nbp - nb)), constant_values=-1.0)
  smax = bmax.reshape(b, nbp // BLOCK, BLOCK).max(-1)                 # (b, superblocks)
  t_s, sbits = _kth_largest(smax, k_total)
  # Round 2: the block maxima of the superblocks that reach t_s.
  sup_vals, sup_idx, n_sup = _gather_groups(bmax.reshape(-1, BLOCK), (sbits >= t_s).reshape(-1),
                                            capacity)
  t_b, bbits = _kth_largest(sup_vals, k_total)
  # Round 3: the scores of the blocks that reach t_b.
  hit = (bbits >= t_b).reshape(-1)
  blk = (sup_idx[:, None] * BLOCK + jnp.arange(BLOCK, dtype=jnp.int32)).reshape(-1)  # in bmax
  blk_row, blk_col = blk // nbp, blk % nbp                 # a hit block is never padding
  n_blk = jnp.sum(hit, dtype=jnp.int32)
  pos = jnp.nonzero(hit, size=capacity, fill_value=0)[0]
  row_of, col_of = blk_row[pos], blk_col[pos]
  vals = take_rows(pre.reshape(b * nb, s), row_of * nb + col_of)
  if bias is not None:
    vals = vals + take_rows(bias, col_of)
  vals = jnp.where((jnp.arange(capacity) < n_blk)[:, None], jnp.maximum(vals, 0.0), -1.0)
  t, vbits = _kth_largest(vals, k_total)
  keep = (vbits >= t).reshape(-1)
  count = jnp.sum(keep, dtype=jnp.int32)
  win = jnp.nonzero(keep, size=capacity, fill_value=0)[0]
  rows = row_of[win // s]
  cols = col_of[win // s] * s + (win % s).astype(jnp.int32)
  fits = ((k_total <= capacity) & (n_sup <= capacity) & (n_blk <= capacity)
          & (count == k_total) & (t > 0))
  return rows, cols, jnp.arange(capacity) < count, fits


def flat_entries(keep, idx, capacity: int):
  """The kept candidates as a static-size list: rows, cols, valid, and whether all fit."""
  c = keep.shape[1]
  flat = keep.reshape(-1)
  pos = jnp.nonzero(flat, size=capacity, fill_value=0)[0]
  count = jnp.sum(flat, dtype=jnp.int32)
  rows = (pos // c).astype(jnp.int32)
  cols = jnp.take(idx.reshape(-1), pos).astype(jnp.int32)
  valid = jnp.arange(capacity) < count
  return rows, cols, valid, count <= capacity


def select_rows_flat(z, k, c: int, row_mask, capacity: int):
  """Per-row top-k of z = masked_scores(...) as a flat entry list: (rows, cols, valid, fits)."""
  del row_mask   # held by z
  _, idx, keep, fits = select_rows(z, k, c)
  rows, cols, valid, fits_list = flat_entries(keep, idx, capacity)
  return rows, cols, valid, fits & fits_list


# ----------------------------------------------------------------------------- sparse compute
def take_rows(a, idx):
  """a[idx] for indices known to be in range (entries come from nonzero / top_k): no
  out-of-bounds select around the gather."""
  return a.at[idx].get(mode="promise_in_bounds")


def entry_values(params, x, rows, cols, valid, pre=None):
  """ReLU(W_enc[:, j] . (x_i - b_dec) + b_enc[j]) for each entry (i, j), with gradient.

  pre: the entries' pre-activations as the selecting forward computed them (the training path
  passes them: nothing is recomputed); None recomputes them in float32 from gathered rows and
  columns (a strided column gather: ~50 ms per paper-shape step, docs/speed.md).
  """
  if pre is None:
    w = jnp.take(params["W_enc"], cols, axis=1)                 # (d, K)
    xc = take_rows(x, rows) - params["b_dec"]
    pre = jnp.einsum("dk,kd->k", w, xc) + take_rows(params["b_enc"], cols)
  pre = _entry_preacts(params["W_enc"], params["b_enc"], params["b_dec"], x, rows, cols, sg(pre))
  return jnp.where(valid, jax.nn.relu(pre), 0.0)


@jax.custom_vjp
def _entry_preacts(w_enc, b_enc, b_dec, x, rows, cols, pre):
  """pre (the entries' pre-activations, computed elsewhere) with the pre-activation's gradient.

  Written out instead of autodiff of gathers. W_enc's gradient: with more entries K than
  latents n, a segment sum of rows into an (n, d) buffer, transposed (autodiff's scatter into
  strided columns took 2.2 s at K = 131072, n = 8192, d = 1024 on XLA:CPU; this ~40 ms); with
  K <= n, the column scatter itself (~26 ms at K = 6144, n = 20000), because XLA hands the
  transposed buffer on in column-major layout and the optimizer's fusions then each re-read it
  strided (+0.35 s per step at the release's shapes). b_dec's gradient is -W_enc (sum of the
  cotangents per latent), a matrix-vector product; x's (level >= 2 inputs) gathers W_enc columns
  and is dead code for XLA where x is data (level 1).
  """
  del w_enc, b_enc, b_dec, x, rows, cols
  return pre


def _entry_preacts_fwd(w_enc, b_enc, b_dec, x, rows, cols, pre):
  return pre, (w_enc, b_dec, x, rows, cols)


def _entry_preacts_bwd(res, a):
  w_enc, b_dec, x, rows, cols = res
  n = w_enc.shape[1]
  xc = take_rows(x, rows) - b_dec                                   # (K, d)
  per_entry = a[:, None] * xc
  if rows.shape[0] > n:
    d_w = jax.ops.segment_sum(per_entry, cols, num_segments=n).T    # rows of (n, d), transposed
  else:
    d_w = column_sums(per_entry, cols, n)
  per_latent = jax.ops.segment_sum(a, cols, num_segments=n)          # (n,)
  d_x = jax.ops.segment_sum((jnp.take(w_enc, cols, axis=1) * a).T, rows,
                            num_segments=x.shape[0])
  return (d_w, per_latent, -(w_enc @ per_latent), d_x, None, None, None)


_entry_preacts.defvjp(_entry_preacts_fwd, _entry_preacts_bwd)


def column_sums(per_entry, cols, n: int):
  """(d, n) matrix whose column j is the sum of the rows of per_entry (K, d) with cols == j.

  The entries' columns come in selection order, so a plain column scatter walks a cold stride-n
  column for every entry (124 ms for K = 6144, d 1024, n 20000 on a Xeon; docs/speed.md). Here
  the duplicates are first summed into one compact row per distinct column (a row segment sum,
  the slot of column j being the number of distinct columns below it), and the compact rows are
  scattered in increasing column order, so neighbouring columns share cache lines (44 ms). No
  sort: the distinct columns in order are the nonzeros of a per-column count.
  """
  k = cols.shape[0]
  present = jnp.zeros(n, jnp.int32).at[cols].add(1) > 0
  slot = jnp.cumsum(present.astype(jnp.int32)) - 1
  compact = jax.ops.segment_sum(per_entry, take_rows(slot, cols), num_segments=k)  # (K, d)
  # Distinct columns ascending; the unused compact rows (zeros) go to the last column, which
  # keeps the indices sorted.
  distinct = jnp.nonzero(present, size=k, fill_value=n - 1)[0]
  return jnp.zeros((per_entry.shape[1], n), per_entry.dtype).at[:, distinct].add(
      compact.T, indices_are_sorted=True, mode="promise_in_bounds")


def decode_entries(params, rows, cols, vals, num_rows: int):
  """xhat_i = b_dec + sum over entries of row i of v * W_dec[j] (a segment sum of gathered atoms)."""
  atoms = take_rows(params["W_dec"], cols)
  return jax.ops.segment_sum(vals[:, None] * atoms, rows, num_segments=num_rows) + params["b_dec"]


def decode_prefixes(params, rows, cols, vals, num_rows: int, group_sizes):
  """(G, B, d) Matryoshka prefix reconstructions from the entries (one segment sum over
  (row, group) pairs, then a cumulative sum over groups)."""
  g = len(group_sizes)
  ends = jnp.cumsum(jnp.asarray(group_sizes, jnp.int32))
  group = jnp.searchsorted(ends, cols, side="right").astype(jnp.int32)
  atoms = take_rows(params["W_dec"], cols)
  parts = jax.ops.segment_sum(vals[:, None] * atoms, rows * g + group, num_segments=num_rows * g)
  parts = parts.reshape(num_rows, g, -1).transpose(1, 0, 2)
  return jnp.cumsum(parts, axis=0) + params["b_dec"]


# ----------------------------------------------------------------------------- gradient inside
@jax.custom_jvp
def attach_grads(value, args, grads):
  """`value`, whose derivative with respect to `args` is `grads` (computed elsewhere).

  Branches of lax.cond / lax.switch compute their own value_and_grad and return the gradient;
  the caller attaches it here. Differentiating through the cond instead would make the taken
  branch also output zero-filled copies of the other branches' residuals (a dense path's (B, n)
  pre-activations, the masked Level 2's n1 x n2 scores), which costs more than the step.
  """
  del args, grads
  return value


@attach_grads.defjvp
def _attach_grads_jvp(primals, tangents):
  value, args, grads = primals
  _, t_args, _ = tangents
  out = jnp.zeros_like(value)
  for t, g in zip(jax.tree_util.tree_leaves(t_args), jax.tree_util.tree_leaves(grads)):
    out = out + jnp.vdot(t, sg(g))
  return value, out


def branch_loss(pred_or_index, branches, params, x, target):
  """lax.switch over loss functions fn(params, x, target) -> (loss, aux), gradients inside.

  Returns (loss with the taken branch's gradients attached, aux). pred_or_index: bool (two
  branches: [false, true]) or int32 index.
  """
  def run(fn):
    def branch():
      (loss, aux), g = jax.value_and_grad(fn, argnums=(0, 1, 2), has_aux=True)(params, x, target)
      return loss, aux, g
    return branch

  index = pred_or_index.astype(jnp.int32) if pred_or_index.dtype == jnp.bool_ else pred_or_index
  loss, aux, grads = lax.switch(index, [run(f) for f in branches])
  return attach_grads(loss, (params, x, target), grads), aux


def loss_by_path(params, x, target, cfg, k, row_mask, *, per_row: bool, dense, from_entries):
  """The family loss by the sparse path, or the dense one when a static bound fails.

  dense(params, x, target) -> (loss, LossOutput), the family's dense computation;
  from_entries(params, x, target, codes, (rows, cols, vals)) -> (loss, LossOutput) from the
  winners' entries (values carry the gradient; codes are the same entries as a
  csae_jax.codes.Entries without gradient).
  """
  capacity = x.shape[0] * cfg.k      # winners at the target k; more (annealing) -> dense
  pre_all = sg(preact(params, x, jnp.dtype(cfg.compute_dtype), bias=per_row))
  if per_row:
    z = masked_scores(pre_all, row_mask)
    rows, cols, valid, fits = select_rows_flat(z, k, candidates(cfg, per_row), row_mask, capacity)
    bias = 0.0
  else:
    # The batch selection reads block maxima of the raw products and adds b_enc itself.
    z, b_enc = pre_all, sg(params["b_enc"])
    rows, cols, valid, fits = select_batch(pre_all, k, row_mask, capacity, bias=b_enc)
    bias = take_rows(b_enc, cols)

  # The selecting forward already holds the winners' pre-activations (> 0 there; winners lie in
  # rows of row_mask, so the mask's -1 never reaches a valid entry). With compute_dtype bfloat16
  # they are the bf16 matmul's float32-accumulated values, as the release's autocast encoder
  # output (which is even rounded to bf16); their gradients stay float32 (_entry_preacts).
  pre = z.at[rows, cols].get(mode="promise_in_bounds") + bias

  def sparse_loss(p, xx, t):
    vals = entry_values(p, xx, rows, cols, valid, pre)
    codes = codes_lib.Entries(rows, cols, sg(vals), valid, z.shape)
    return from_entries(p, xx, t, codes, (rows, cols, vals))

  return branch_loss(fits, [dense, sparse_loss], params, x, target)
