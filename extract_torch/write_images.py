"""Write an image source to a folder, one subfolder per class: the folder layout that
`--source=folder:<root>` (launch.extract) and the steering experiment's held-out images read.

  python -m extract_torch.write_images --source=procedural:8 --out=/tmp/csae_tutorial/images
  python -m extract_torch.write_images --source=procedural:2 --seed=1 --out=/tmp/heldout

Procedural images are deterministic in (seed, position); another seed gives new images of the
same classes (held-out images for steering). Files are written to a temporary folder and renamed.
"""
from __future__ import annotations

import os
import shutil
import tempfile

from absl import app
from absl import flags


def _define_flags() -> None:
  """Flags exist only when this module is the program (importing it defines none)."""
  flags.DEFINE_string("source", None, "procedural[:<n_per_class>] | folder:<root> | "
                      "tfds:<name>:<split> (extract_torch.sources.make_source)")
  flags.DEFINE_string("out", None, "Folder to create (<out>/<class>/<index>.png).")
  flags.DEFINE_integer("seed", 0, "Procedural images: seed.")
  flags.DEFINE_integer("resize", None, "Resize to NxN (procedural: the image side).")
  flags.DEFINE_bool("overwrite", False, "Replace an existing --out folder.")
  flags.mark_flags_as_required(["source", "out"])


def write_folder(source, out: str, overwrite: bool = False) -> list[str]:
  """Every image of `source` as <out>/<class name>/<index>.png; returns the written paths."""
  if os.path.exists(out) and not overwrite:
    raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
  parent = os.path.dirname(os.path.abspath(out))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".images-", dir=parent)
  rel = []
  try:
    for i in range(len(source)):
      name = source.label_names[int(source.labels[i])]
      os.makedirs(os.path.join(tmp, name), exist_ok=True)
      rel.append(os.path.join(name, f"{i:06d}.png"))
      source.load(i).convert("RGB").save(os.path.join(tmp, rel[-1]))
    if os.path.exists(out):
      shutil.rmtree(out)
    os.rename(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return [os.path.join(out, r) for r in rel]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from extract_torch import sources
  f = flags.FLAGS
  src = sources.make_source(f.source, seed=f.seed, resize=f.resize)
  paths = write_folder(src, f.out, overwrite=f.overwrite)
  print(f"wrote {len(paths)} images ({len(src.label_names)} classes) to {f.out}")


def cli() -> None:
  """Console-script entry point (csae-write-images, setup.py)."""
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  cli()
