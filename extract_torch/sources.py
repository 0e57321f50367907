"""Image sources: a folder with one subfolder per class, TFDS array-record data sources, and
procedural images. A source is an ordered list of (image id, label) with random access to the
image, so samplers, shards and resumption can address images by position.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import stat
from typing import Any, Callable, Sequence

import numpy as np
from absl import logging
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


class ImageLoadError(ValueError):
  """An image that cannot be read or decoded."""


@dataclasses.dataclass
class Source:
  """ids[i], labels[i] and load(i) -> RGB PIL image; label_names[label] names the class."""
  name: str
  ids: list[str]
  labels: np.ndarray
  label_names: list[str]
  _load: Callable[[int], Image.Image]
  fingerprint: dict = dataclasses.field(default_factory=dict)

  def __len__(self) -> int:
    return len(self.ids)

  def load(self, i: int) -> Image.Image:
    """The RGB image at position i; ImageLoadError naming it when unreadable."""
    try:
      img = self._load(int(i))
      img.load()
      return img.convert("RGB")
    except ImageLoadError:
      raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError) as e:
      raise ImageLoadError(f"cannot read image {self.ids[i]!r}: {type(e).__name__}: {e}") from e


def folder_source(root: str, extensions: Sequence[str] = IMAGE_EXTENSIONS,
                  resize: int | None = None) -> Source:
  """root/<class>/<file>: classes are the sorted subfolder names, files sorted within a class.

  This is the layout of the authors' release. Image ids are '<class>/<file>'.
  resize: resize every image to resize x resize first (SPEC section 6: 256 for Qwen3-VL).
  """
  root = os.fspath(root)
  if not os.path.isdir(root):
    raise ValueError(f"image folder {root!r} does not exist")
  classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
  if not classes:
    raise ValueError(f"image folder {root!r} has no class subfolders (expected root/<class>/<image>)")
  ids, labels, not_regular = [], [], []
  exts = tuple(e.lower() for e in extensions)
  for c, cls in enumerate(classes):
    for fname in sorted(os.listdir(os.path.join(root, cls))):
      if fname.lower().endswith(exts):
        if not _is_regular(os.path.join(root, cls, fname)):
          not_regular.append(f"{cls}/{fname}")   # a FIFO would block open() forever
          continue
        ids.append(f"{cls}/{fname}")
        labels.append(c)
  if not_regular:
    logging.warning("skipping %d image name(s) that are not regular files: %s", len(not_regular),
                    not_regular[:5])
  if not ids:
    raise ValueError(f"no images with extensions {exts} under {root!r}")

  def load(i):
    path = os.path.join(root, ids[i])
    if not _is_regular(path):    # replaced since listing
      raise ImageLoadError(f"{ids[i]!r} is not a regular file (a FIFO, device or directory)")
    img = Image.open(path)
    return _resized(img, resize)

  listing = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
  fingerprint = {"kind": "folder", "root": os.path.abspath(root), "listing": listing,
                 "resize": resize}
  if not_regular:   # recorded in the store manifest (manifest["source"])
    fingerprint["not_regular_files"] = not_regular
  return Source(f"folder:{root}", ids, np.asarray(labels, np.int64), classes, load, fingerprint)


def _is_regular(path: str) -> bool:
  """A regular file (or a link to one); FIFOs, sockets and devices are not images."""
  try:
    return stat.S_ISREG(os.stat(path).st_mode)
  except OSError:
    return False


def _resized(img: Image.Image, size: int | None) -> Image.Image:
  if size is None:
    return img
  img.load()
  return img.convert("RGB").resize((size, size), Image.BICUBIC)


def tfds_source(name: str, split: str, data_dir: str | None = None, image_key: str = "image",
                label_key: str = "label", id_key: str | None = None,
                resize: int | None = None, undecoded_labels: bool = True) -> Source:
  """A TFDS dataset through `tfds.data_source` (array-record, random access, no TensorFlow).

  The dataset must already be prepared in data_dir in the array_record file format
  (`tfds build --file_format=array_record`); `tfds.load` would need TensorFlow, data sources
  do not. Labels and their names come from the ClassLabel feature `label_key`.

  undecoded_labels: read the labels in one pass with the images left undecoded
  (`tfds.decode.SkipDecoding`, NumPy only: fast on a prepared dataset). False decodes every image
  once instead; `tfds.testing.mock_data` needs that without TensorFlow, because its fake
  generator encodes images with TensorFlow whenever a decoder is passed.
  """
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise ImportError("the TFDS image source needs the tensorflow-datasets package "
                      "(pip install tensorflow-datasets array_record); TensorFlow itself is not "
                      "needed") from e
  builder = tfds.builder(name, data_dir=data_dir)
  ds = tfds.data_source(name, split=split, data_dir=data_dir)
  # one pass over the labels, images left undecoded
  meta = ds if not undecoded_labels else tfds.data_source(
      name, split=split, data_dir=data_dir, decoders={image_key: tfds.decode.SkipDecoding()})
  feature = builder.info.features[label_key]
  names = list(getattr(feature, "names", None) or [])
  n = len(ds)
  labels = np.empty(n, np.int64)
  ids = []
  for i in range(n):
    ex = meta[i]
    labels[i] = int(ex[label_key])
    ident = ex.get(id_key) if id_key else None
    ids.append(ident.decode() if isinstance(ident, bytes) else str(ident) if ident is not None
               else f"{name}/{split}/{i}")

  def load(i):
    arr = ds[i][image_key]
    if isinstance(arr, bytes):
      return _resized(Image.open(io.BytesIO(arr)), resize)
    return _resized(Image.fromarray(np.asarray(arr, np.uint8)), resize)

  if not names:
    names = [str(k) for k in range(int(labels.max()) + 1 if n else 0)]
  return Source(f"tfds:{name}/{split}", ids, labels, names, load,
                {"kind": "tfds", "name": name, "split": split, "n": n, "resize": resize})


PROCEDURAL_COLORS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220),
                     "yellow": (230, 220, 30), "purple": (140, 40, 170), "orange": (240, 140, 20),
                     "cyan": (30, 200, 210), "gray": (128, 128, 128)}


def procedural_source(n_per_class: int = 4, classes: Sequence[str] = ("red", "green", "blue"),
                      size: int = 32, seed: int = 0, sizes: Sequence[int] | None = None) -> Source:
  """Mono-colour shapes (a disc or a square of the class colour on a noisy background), a tiny
  stand-in for the Color dataset. Deterministic in (seed, position).

  sizes: if given, image i has side sizes[i % len(sizes)] (varying token counts per image).
  """
  unknown = [c for c in classes if c not in PROCEDURAL_COLORS]
  if unknown:
    raise ValueError(f"unknown procedural classes {unknown}; choose from {list(PROCEDURAL_COLORS)}")
  if n_per_class <= 0:
    raise ValueError(f"n_per_class must be positive, got {n_per_class}")
  n = n_per_class * len(classes)
  labels = np.repeat(np.arange(len(classes)), n_per_class).astype(np.int64)
  ids = [f"{classes[labels[i]]}/{i:06d}" for i in range(n)]

  def load(i):
    rng = np.random.default_rng([seed, i])
    side = size if sizes is None else int(sizes[i % len(sizes)])
    img = rng.integers(0, 60, (side, side, 3)).astype(np.float32) + 100
    yy, xx = np.mgrid[:side, :side]
    cy, cx = rng.uniform(0.3, 0.7, 2) * side
    r = rng.uniform(0.2, 0.35) * side
    mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r) if rng.random() < 0.5 else \
        (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r)
    img[mask] = np.asarray(PROCEDURAL_COLORS[classes[labels[i]]], np.float32) + \
        rng.normal(0, 8, (int(mask.sum()), 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))

  return Source("procedural", ids, labels, list(classes), load,
                {"kind": "procedural", "n_per_class": n_per_class, "classes": list(classes),
                 "size": size, "seed": seed, "sizes": None if sizes is None else list(sizes)})


def make_source(spec: str, **kwargs: Any) -> Source:
  """'folder:<root>', 'tfds:<name>:<split>' or 'procedural[:<n_per_class>]'."""
  kind, _, rest = spec.partition(":")
  if kind == "folder" and rest:
    return folder_source(rest, resize=kwargs.get("resize"))
  if kind == "tfds" and rest.count(":") == 1:
    name, split = rest.split(":")
    return tfds_source(name, split, data_dir=kwargs.get("data_dir"), resize=kwargs.get("resize"),
                       image_key=kwargs.get("image_key", "image"),
                       label_key=kwargs.get("label_key", "label"),
                       undecoded_labels=kwargs.get("undecoded_labels", True))
  if kind == "procedural":
    n = int(rest) if rest else 4
    return procedural_source(n, size=kwargs.get("resize") or 32, seed=kwargs.get("seed", 0))
  raise ValueError(f"image source {spec!r} not understood; use folder:<root>, "
                   f"tfds:<name>:<split> or procedural[:<n_per_class>]")
