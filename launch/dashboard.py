"""Build concept dashboards (static HTML) from an experiment workdir or a single trainer run.

  python -m launch.dashboard --workdir=/tmp/exp_planted            # rebuilds <workdir>/browser
  python -m launch.dashboard --workdir=/tmp/run --eval_store=STORE --out=/tmp/dash
  python -m launch.dashboard --workdir=DIR --image_root=/data/images   # real images by id

Nothing is retrained. An experiment's saved evaluations are reused; a trainer run is evaluated on
--eval_store once (cached in <run>/evaluation). Open <out>/index.html (experiments) or
<out>/<method>.html in any browser; the pages need no server and no network.
"""
import os
import sys

from absl import app
from absl import flags
from absl import logging

_WORKDIR = flags.DEFINE_string("workdir", None, "Experiment workdir or trainer run directory.")
_EVAL_STORE = flags.DEFINE_string("eval_store", None, "Evaluation store (trainer runs only).")
_OUT = flags.DEFINE_string("out", None, "Output directory (default <workdir>/browser).")
_IMAGE_ROOT = flags.DEFINE_string("image_root", None, "Directory the store's image ids are "
                                  "relative to (ids are never read outside it).")
_MAX_PARENTS = flags.DEFINE_integer("max_parents", None, "Top-level units per page.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)   # orbax logs every checkpoint read at INFO
  from csae_jax.evaluation import browser
  wd = _WORKDIR.value
  out = _OUT.value or os.path.join(wd, "browser")
  try:
    if os.path.exists(os.path.join(wd, "experiment.json")):
      paths = browser.write_experiment(wd, out, image_root=_IMAGE_ROOT.value,
                                       max_parents=_MAX_PARENTS.value)
      paths.append(os.path.join(out, "index.html"))
    else:
      if _EVAL_STORE.value is None:
        raise ValueError(f"{wd} is a trainer run, not an experiment: give --eval_store=<store "
                         "with reference embeddings> to evaluate it")
      import csae_jax
      h = csae_jax.load(wd, eval_store=_EVAL_STORE.value)
      paths = [h.dashboard(os.path.join(out, f"{h.method}.html"), image_root=_IMAGE_ROOT.value,
                           max_parents=_MAX_PARENTS.value or 200)]
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for p in paths:
    print(f"wrote {p}")
  return 0


def cli():
  """Console-script entry point (csae-dashboard, setup.py)."""
  app.run(main)   # exits with main's return code


if __name__ == "__main__":
  cli()
