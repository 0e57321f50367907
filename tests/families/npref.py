"""NumPy float64 references for the SAE families (SPEC section 2), written independently of
csae_jax: each loss is a plain function of float64 arrays, and gradients are central finite
differences in float64 with every stop-gradient quantity (masks, detached residuals, frozen
decoder copies) passed in as a fixed argument, which is what stop_gradient means."""
import numpy as np


def relu(v):
  return np.maximum(v, 0.0)


def recon(t, xhat):
  return np.mean(np.sum((t - xhat) ** 2, axis=-1))


def preact(p, x):
  return (x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]


def row_topk_mask(z, k):
  idx = np.argsort(-z, axis=1)[:, :k]
  m = np.zeros_like(z, bool)
  np.put_along_axis(m, idx, True, axis=1)
  return m


def batch_topk_mask(z, K, valid=None):
  flat = z.copy().ravel()
  if valid is not None:
    flat[~np.broadcast_to(valid, z.shape).ravel()] = -np.inf
  idx = np.argsort(-flat, kind="stable")[:K]
  m = np.zeros(flat.shape, bool)
  m[idx] = True
  return m.reshape(z.shape)


def auxk(p, z, e, dead, aux_k, d):
  k = int(min(aux_k, d // 2, dead.sum()))
  if k == 0:
    return 0.0
  zd = np.where(dead[None], z, 0.0)
  f_aux = zd * row_topk_mask(zd, k)
  e_aux = f_aux @ p["W_dec"]
  return np.sum((e - e_aux) ** 2) / np.sum((e - e.mean(0)) ** 2)


def fd_grad(loss_fn, params, h=1e-6):
  """Central differences of loss_fn(params) for every element of every leaf (float64)."""
  grads = {}
  for name, v in params.items():
    g = np.zeros_like(v)
    it = np.nditer(v, flags=["multi_index"])
    for _ in it:
      i = it.multi_index
      plus = {k: a.copy() for k, a in params.items()}
      minus = {k: a.copy() for k, a in params.items()}
      plus[name][i] += h
      minus[name][i] -= h
      g[i] = (loss_fn(plus) - loss_fn(minus)) / (2 * h)
    grads[name] = g
  return grads
