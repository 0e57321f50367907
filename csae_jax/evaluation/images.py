"""Images for the concept dashboard: label colours, safe image lookup, rendered thumbnails.

Image ids come from a store and are untrusted text. They are read as files only under an explicit
image root (the dashboard's `image_root`, else the root a folder-source store recorded at
extraction), after resolving symlinks and `..`: an id that is absolute or leaves the root is never
opened. Images without a file are rendered, never replaced by flat swatches:
  procedural stores (extract_torch.sources.procedural_source) are re-rendered from the store's
    recorded source parameters, so thumbnails show the very pixels that were extracted;
  the planted hierarchy (no pixels exist) is drawn as one tile per token, the tile colour the
    image's label (its planted parent) and a stripe pattern its planted favourite child;
  anything else gets a tile image in its label's colour.
Label colours: a colour-named label (red, green, ...) gets that colour; otherwise a fixed
categorical palette (golden-ratio hues beyond it). The page's legend shows the same mapping.
"""
from __future__ import annotations

import base64
import colorsys
import io
import os

import numpy as np

from csae_jax.evaluation import unit_stats

THUMB = 64
NAMED = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220),
         "yellow": (230, 220, 30), "purple": (140, 40, 170), "orange": (240, 140, 20),
         "cyan": (30, 200, 210), "gray": (128, 128, 128), "grey": (128, 128, 128),
         "black": (20, 20, 20), "white": (245, 245, 245), "pink": (240, 120, 170),
         "brown": (130, 80, 40)}
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
UNLABELLED = (170, 170, 170)


def label_color(label: int | None, names=None) -> tuple[int, int, int]:
  """RGB of a label: its own colour when its name is a colour, else the categorical palette."""
  if label is None or label < 0:
    return UNLABELLED
  if names is not None and label < len(names) and str(names[label]).lower() in NAMED:
    return NAMED[str(names[label]).lower()]
  if label < len(PALETTE):
    return PALETTE[label]
  r, g, b = colorsys.hsv_to_rgb((label * 0.618033988749895) % 1.0, 0.65, 0.85)
  return int(r * 255), int(g * 255), int(b * 255)


def hex_color(rgb) -> str:
  return "#%02x%02x%02x" % tuple(int(c) for c in rgb)


def png_uri(img) -> str:
  buf = io.BytesIO()
  img.save(buf, format="PNG", optimize=True)
  return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def safe_path(image_id: str, image_root: str | None) -> str | None:
  """The regular file `image_id` names under `image_root`, or None: never outside the root."""
  if not image_root or not isinstance(image_id, str) or not image_id or "\x00" in image_id:
    return None
  if os.path.isabs(image_id) or image_id.startswith(("/", "\\")) or ":" in image_id[:2]:
    return None
  root = os.path.realpath(image_root)
  cand = os.path.realpath(os.path.join(root, image_id))
  if os.path.commonpath([root, cand]) != root or cand == root:
    return None
  return cand if os.path.isfile(cand) else None


def file_thumb(path: str, size: int = THUMB) -> str | None:
  from PIL import Image
  try:
    with Image.open(path) as im:
      im = im.convert("RGB")
      im.thumbnail((size, size))
      return png_uri(im)
  except (OSError, ValueError, Image.DecompressionBombError):
    return None


def tile_image(label: int | None, names=None, n_tokens: int = 16, child: int | None = None,
               size: int = THUMB):
  """A planted / generic image: one tile per token on the heatmap grid, in the label's colour,
  diagonal stripes whose angle and spacing code `child`."""
  from PIL import Image
  _, rows, cols = unit_stats.heat_grid(max(int(n_tokens), 1))
  rows, cols = min(rows, 8), min(cols, 64) if rows == 1 else min(cols, 8)
  base = np.array(label_color(label, names), np.float64)
  yy, xx = np.mgrid[:size, :size]
  img = np.tile(base, (size, size, 1))
  if child is not None and child >= 0:
    period = 6 + (int(child) % 4) * 3
    slope = (-1, 1, 0, 2)[(int(child) // 4) % 4]
    stripe = ((xx + slope * yy) // (period // 2)) % 2 == 0 if slope else (yy // (period // 2)) % 2 == 0
    img[stripe] = img[stripe] * 0.75
  # Tile borders: the token grid the heatmap is drawn on.
  ty = (yy * rows // size)
  tx = (xx * cols // size)
  edge = (np.diff(ty, axis=0, prepend=-1) != 0) | (np.diff(tx, axis=1, prepend=-1) != 0)
  img[edge & (yy > 0) & (xx > 0)] *= 0.8
  return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def procedural_renderer(manifest: dict | None):
  """id -> PIL image for a store extracted from procedural images, else None.

  Uses the generator that made the pixels (extract_torch, NumPy + PIL only, imported lazily).
  """
  src = (manifest or {}).get("source") or {}
  if src.get("kind") != "procedural":
    return None
  try:
    from extract_torch import sources as xsources
    gen = xsources.procedural_source(int(src["n_per_class"]), tuple(src["classes"]),
                                     int(src.get("size") or 32), int(src.get("seed") or 0),
                                     src.get("sizes"))
  except (ImportError, KeyError, TypeError, ValueError):
    return None
  pos = {iid: i for i, iid in enumerate(gen.ids)}

  def render(image_id):
    i = pos.get(image_id)
    return None if i is None else gen.load(i)
  return render


def image_root_of(source, image_root: str | None) -> str | None:
  """The explicit root, else the folder a folder-source store was extracted from."""
  if image_root:
    return image_root
  src = (getattr(source, "manifest", None) or {}).get("source") or {}
  return src.get("root") if src.get("kind") == "folder" else None


def thumbnails(indices, source, image_root=None, sub_labels: dict | None = None,
               size: int = THUMB) -> dict:
  """image index -> PNG data URI for images of an evaluation source (see the module doc)."""
  ids = list(source.image_ids)
  labels = source.labels
  names = getattr(source, "label_names", None)
  root = image_root_of(source, image_root)
  render = procedural_renderer(getattr(source, "manifest", None))
  offsets = np.asarray(source.token_offsets)
  out = {}
  for i in sorted(set(int(i) for i in indices)):
    iid = str(ids[i])
    uri = None
    path = safe_path(iid, root)
    if path is not None:
      uri = file_thumb(path, size)
    if uri is None and render is not None:
      img = render(iid)
      if img is not None:
        img = img.convert("RGB")
        img.thumbnail((size, size))
        uri = png_uri(img)
    if uri is None:
      lab = int(labels[i]) if labels is not None else -1
      child = (sub_labels or {}).get(iid)
      uri = png_uri(tile_image(lab, names, int(offsets[i + 1] - offsets[i]), child, size))
    out[i] = uri
  return out
