r"""Load our SAELens-format exports in SAELens itself and compare its codes with ours.

SAELens is not a project dependency (it pulls ~50 packages), so it runs in its own environment:
  python3 -m venv /tmp/saelens-venv && /tmp/saelens-venv/bin/pip install torch==2.13.0 sae-lens
  .venv/bin/python -m tools.saelens_interop --saelens_python=/tmp/saelens-venv/bin/python

For each exportable family: random parameters (BatchTopK/Matryoshka with a set inference
threshold), input scale s = 3.7 folded in by csae_jax.export.export_saelens; SAELens loads the
directory with SAE.load_from_disk and encodes/decodes the same raw activations. Prints the max
relative error of codes and reconstructions per family and exits non-zero above 1e-5.
"""
import json
import os
import subprocess
import sys
import tempfile


from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from csae_jax import export, models

_SAELENS_PYTHON = flags.DEFINE_string(
    "saelens_python", None, "Python of an environment with sae-lens and torch installed.")
flags.mark_flags_as_required(["saelens_python"])

D, N, S = 32, 96, 3.7
OPTIONS = {"relu": {}, "pannealing": {}, "topk": {"k": 8}, "jumprelu": {}, "gated": {},
           "batchtopk": {"k": 8}, "matryoshka": {"k": 8, "group_sizes": [32, 64]}}

SAELENS_SIDE = r"""
import json, sys, numpy as np, torch
from sae_lens import SAE
out = {}
for name, path in json.loads(sys.argv[1]).items():
  sae = SAE.load_from_disk(path, device="cpu")
  x = torch.from_numpy(np.load(path + "/x.npy"))
  with torch.no_grad():
    f = sae.encode(x)
    np.save(path + "/saelens_codes.npy", f.numpy())
    np.save(path + "/saelens_recon.npy", sae.decode(f).numpy())
  out[name] = type(sae).__name__
print(json.dumps(out))
"""


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  x_raw = (S * rng.normal(size=(64, D))).astype(np.float32)
  tmp = tempfile.mkdtemp(prefix="saelens_interop_")
  paths, ours = {}, {}
  for name, opts in OPTIONS.items():
    model = models.build_model(dict(name=name, d=D, options=dict(n=N, **opts)))
    params, state = model.init(jax.random.PRNGKey(1), jnp.asarray(x_raw / S))
    params = jax.tree_util.tree_map(
        lambda v: v + 0.05 * jnp.asarray(rng.normal(size=v.shape), jnp.float32), params)
    if "threshold" in state:
      state = dict(state, threshold=jnp.float32(0.15))
    path = os.path.join(tmp, name)
    export.export_saelens(path, model, params, state, input_scale=S)
    np.save(os.path.join(path, "x.npy"), x_raw)
    pf, sf = model.fold_scale(params, state, S)
    codes = np.asarray(model.encode(pf, sf, jnp.asarray(x_raw)))
    ours[name] = (codes, np.asarray(model.decode(pf, jnp.asarray(codes))))
    paths[name] = path
  res = subprocess.run([_SAELENS_PYTHON.value, "-c", SAELENS_SIDE, json.dumps(paths)],
                       capture_output=True, text=True)
  if res.returncode:
    sys.exit(res.stderr[-4000:])
  classes = json.loads(res.stdout.strip().splitlines()[-1])
  worst = 0.0
  for name, path in paths.items():
    c, r = ours[name]
    c2 = np.load(os.path.join(path, "saelens_codes.npy"))
    r2 = np.load(os.path.join(path, "saelens_recon.npy"))
    ec = np.abs(c - c2).max() / max(np.abs(c).max(), 1e-12)
    er = np.abs(r - r2).max() / max(np.abs(r).max(), 1e-12)
    worst = max(worst, ec, er)
    print(f"{name:11s} -> SAELens {classes[name]:14s} codes rel.err {ec:.2e}  recon rel.err "
          f"{er:.2e}  active {int((c > 0).sum())}/{int((c2 > 0).sum())}")
  print(f"worst relative error {worst:.2e} ({'ok' if worst <= 1e-5 else 'FAIL'})")
  sys.exit(0 if worst <= 1e-5 else 1)


if __name__ == "__main__":
  app.run(main)
