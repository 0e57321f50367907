"""Bench: what the integrity checks of docs/reliability.md cost.

  python -m bench.reliability
  python -m bench.reliability --tokens=262144 --d=1024 --n=20000 --repeats=3

store   reading every chunk of a float32 store: verify() (sha256 per chunk) vs
        verify(check_finite=True) (the trainer's default: one pass, checksums and NaN/Inf) vs
        check_finite() alone (data.verify=False), as seconds and GB/s, each the range over
        --repeats runs in one process.
state   checkpoint.state_checksums (sha256 of every leaf, added to every save and restore) on a
        flat SAE's params + Adam moments at width n (3 x (2 n d + n + d) float32), as seconds
        and GB/s.
"""
from __future__ import annotations

import json
import platform
import tempfile
import time

from absl import app
from absl import flags

_TOKENS = flags.DEFINE_integer("tokens", 65536, "Store tokens.")
_D = flags.DEFINE_integer("d", 1024, "Width d.")
_N = flags.DEFINE_integer("n", 20000, "Dictionary size for the state checksum.")
_CHUNK = flags.DEFINE_integer("chunk_tokens", 8192, "Store chunk tokens.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats (the range is reported).")


def _times(fn, repeats):
  out = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    out.append(time.perf_counter() - t0)
  return out


def main(argv):
  del argv
  import numpy as np
  from csae_jax import store as store_lib
  from csae_jax.trainer import checkpoint as ckpt_lib
  rng = np.random.default_rng(0)
  n_tok, d, reps = _TOKENS.value, _D.value, _REPEATS.value
  acts = rng.normal(size=(n_tok, d)).astype(np.float32)
  gb = acts.nbytes / 1e9
  report = {"machine": platform.processor() or platform.machine(), "tokens": n_tok, "d": d}
  with tempfile.TemporaryDirectory() as tmp:
    path = store_lib.write_store(f"{tmp}/s", acts, [0, n_tok], chunk_tokens=_CHUNK.value)
    st = store_lib.ActivationStore.open(path)
    for name, fn in (("verify", st.verify),
                     ("verify+finite", lambda: st.verify(check_finite=True)),
                     ("finite_only", st.check_finite)):
      t = _times(fn, reps)
      report[f"store_{name}_s"] = [round(min(t), 3), round(max(t), 3)]
      report[f"store_{name}_GBps"] = [round(gb / max(t), 2), round(gb / min(t), 2)]
  n = _N.value
  leaf = lambda *s: rng.normal(size=s).astype(np.float32)  # noqa: E731
  params = {"W_enc": leaf(d, n), "W_dec": leaf(n, d), "b_enc": leaf(n), "b_dec": leaf(d)}
  state = {"params": params, "mu": params, "nu": params}
  sgb = 3 * sum(v.nbytes for v in params.values()) / 1e9
  t = _times(lambda: ckpt_lib.state_checksums(state), reps)
  report.update(state_GB=round(sgb, 3), state_checksums_s=[round(min(t), 3), round(max(t), 3)],
                state_checksums_GBps=[round(sgb / max(t), 2), round(sgb / min(t), 2)])
  print(json.dumps(report, indent=1))


if __name__ == "__main__":
  app.run(main)
