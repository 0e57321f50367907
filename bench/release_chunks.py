"""How much the release-faithful evaluation options move HMS (issue 12, item 4).

  python -m bench.release_chunks --workdir=/tmp/exp_effnet --methods=csae,batchtopk

Re-evaluates the finished runs of an experiments workdir (launch.experiments or
bridge_torch.fidelity_experiment) on its evaluation store with: global 4096-token chunks (SPEC 4),
the release's chunks inside 16-image batches, and the full release options (also alive = top-20).
Prints HMS means and the per-parent |dHMS| of the chunking alone (figures:
docs/release_faithful.md).
"""
from __future__ import annotations

import json
import os

from absl import app
from absl import flags
import ml_collections
import numpy as np

from csae_jax import trainer
from csae_jax.evaluation import evaluator as ev_lib
from csae_jax.evaluation import experiments as ex
from csae_jax.evaluation import release
from csae_jax.evaluation import sources

_WORKDIR = flags.DEFINE_string("workdir", None, "An experiments workdir with finished runs.")
_METHODS = flags.DEFINE_list("methods", ["csae", "batchtopk"], "Methods to re-evaluate.")

OPTIONS = {
    "global": ev_lib.Options(chunk_tokens=4096),
    "release_chunks": ev_lib.Options(chunk_tokens=4096,
                                     images_per_batch=release.RELEASE_IMAGES_PER_BATCH),
    "release_all": ev_lib.Options(chunk_tokens=4096,
                                  images_per_batch=release.RELEASE_IMAGES_PER_BATCH,
                                  top_alive=release.RELEASE_TOP_ALIVE,
                                  act_min=release.RELEASE_ACT_MIN),
}


def main(argv) -> None:
  del argv
  w = _WORKDIR.value
  with open(os.path.join(w, "experiment.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  src = sources.open_store(config.data.eval_path or config.data.path)
  for method in _METHODS.value:
    runs = {r: trainer.load_run(os.path.join(w, "runs", r))
            for r in ex.method_runs(config, method)}
    subject = ex.method_subject(config, method, runs)
    out = {k: ev_lib.evaluate(subject, src, o) for k, o in OPTIONS.items()}
    h0, h1 = out["global"].hms[0], out["release_chunks"].hms[0]
    ok = np.isfinite(h0) & np.isfinite(h1)
    d = np.abs(h0[ok] - h1[ok])
    print(f"{method}: HMS mean " + ", ".join(f"{k} {v.summary['hms']['mean']:.4f}"
                                             for k, v in out.items())
          + f"; chunking alone |dHMS| per parent mean {d.mean():.4f} max {d.max():.4f} over "
          f"{ok.sum()} parents", flush=True)


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
