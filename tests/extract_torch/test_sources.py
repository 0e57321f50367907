"""Image sources: folder layout, procedural images, TFDS through the real package and without it."""
import sys

import numpy as np
import pytest
from PIL import Image

from extract_torch import sources


def test_folder_source_layout(tmp_path):
  for cls, n in (("b_dog", 2), ("a_cat", 3)):
    (tmp_path / cls).mkdir()
    for k in range(n):
      Image.new("RGB", (10 + k, 12), (k, 0, 0)).save(tmp_path / cls / f"{k}.png")
  (tmp_path / "a_cat" / "readme.txt").write_text("not an image")
  src = sources.folder_source(tmp_path, resize=16)
  assert src.label_names == ["a_cat", "b_dog"]
  assert src.ids == ["a_cat/0.png", "a_cat/1.png", "a_cat/2.png", "b_dog/0.png", "b_dog/1.png"]
  assert src.labels.tolist() == [0, 0, 0, 1, 1]
  img = src.load(4)
  assert img.size == (16, 16) and img.mode == "RGB"
  with pytest.raises(ValueError, match="no class subfolders"):
    sources.folder_source(tmp_path / "a_cat")
  with pytest.raises(ValueError, match="does not exist"):
    sources.folder_source(tmp_path / "missing")


def test_procedural_is_deterministic_and_class_coloured():
  src = sources.procedural_source(3, classes=("red", "blue"), size=24, seed=5)
  a, b = np.asarray(src.load(4)), np.asarray(sources.procedural_source(
      3, classes=("red", "blue"), size=24, seed=5).load(4))
  np.testing.assert_array_equal(a, b)
  assert a.shape == (24, 24, 3) and src.labels.tolist() == [0, 0, 0, 1, 1, 1]
  # the brightest-blue pixels of a blue image are the shape: blue channel dominates there
  shape = a[..., 2] > 180
  assert shape.sum() > 20 and (a[shape][:, 2] > a[shape][:, 0] + 100).all()
  with pytest.raises(ValueError, match="unknown procedural classes"):
    sources.procedural_source(2, classes=("teal",))


def test_make_source_specs(tmp_path):
  assert len(sources.make_source("procedural:2")) == 6
  with pytest.raises(ValueError, match="not understood"):
    sources.make_source("s3://bucket")


def test_tfds_without_the_package_gives_a_clear_error(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)     # import fails
  with pytest.raises(ImportError, match="tensorflow-datasets.*TensorFlow itself is not needed"):
    sources.make_source("tfds:imagenet2012:validation")


def test_tfds_source_through_the_real_package():
  """tensorflow-datasets itself (no TensorFlow): `tfds.testing.mock_data` with the real
  imagenette builder code serves `tfds.data_source("imagenette/320px", split="train")` offline;
  the adapter reads labels, names and images through it. Label names come from the builder's
  ClassLabel feature (10 imagenette synsets); images and labels must match what the data source
  itself returns for the same index."""
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
    src = sources.make_source("tfds:imagenette/320px:train", resize=None, undecoded_labels=False)
    direct = tfds.data_source("imagenette/320px", split="train")
    assert len(src) == len(direct) == 5
    assert len(src.label_names) == 10 and src.label_names[0].startswith("n0")
    assert src.ids == [f"imagenette/320px/train/{i}" for i in range(5)]
    for i in range(5):
      ex = direct[i]
      assert src.labels[i] == int(ex["label"]) and 0 <= src.labels[i] < 10
      img = np.asarray(src.load(i))
      assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[-1] == 3
      np.testing.assert_array_equal(img, ex["image"])
    resized = sources.tfds_source("imagenette/320px", "train", resize=16, undecoded_labels=False)
    assert resized.load(2).size == (16, 16)
    assert src.fingerprint["kind"] == "tfds" and src.fingerprint["n"] == 5


def test_tfds_adapter_against_the_documented_data_source_api(monkeypatch):
  """The SkipDecoding label pass (the default) cannot run under `tfds.testing.mock_data` without
  TensorFlow (the mock encodes images with TF whenever a decoder is passed): a stand-in module
  with the documented surface (tfds.builder(...).info.features[label].names, tfds.data_source(name, split=,
  data_dir=, decoders=) -> random-access sequence of dicts, tfds.decode.SkipDecoding) checks how
  the adapter uses it: labels read with images left undecoded, images decoded on load."""
  import io
  import types
  rng = np.random.default_rng(0)
  arrays = [rng.integers(0, 255, (8, 8, 3), dtype=np.uint8) for _ in range(5)]
  encoded = []
  for a in arrays:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    encoded.append(buf.getvalue())
  calls = []

  class SkipDecoding:
    pass

  def data_source(name, split, data_dir=None, decoders=None):
    calls.append((name, split, data_dir, None if decoders is None else sorted(decoders)))
    skip = decoders is not None and isinstance(decoders.get("image"), SkipDecoding)
    return [{"image": encoded[i] if skip else arrays[i], "label": np.int64(i % 2)}
            for i in range(5)]

  label = types.SimpleNamespace(names=["even", "odd"])
  fake = types.SimpleNamespace(
      builder=lambda name, data_dir=None: types.SimpleNamespace(
          info=types.SimpleNamespace(features={"label": label})),
      data_source=data_source, decode=types.SimpleNamespace(SkipDecoding=SkipDecoding))
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
  src = sources.make_source("tfds:toy:train", data_dir="/data/tfds")
  assert src.label_names == ["even", "odd"] and src.labels.tolist() == [0, 1, 0, 1, 0]
  assert src.ids == [f"toy/train/{i}" for i in range(5)]
  np.testing.assert_array_equal(np.asarray(src.load(3)), arrays[3])
  assert ("toy", "train", "/data/tfds", ["image"]) in calls       # the label pass skips images


def test_fifo_with_an_image_name_is_skipped_and_listed(tmp_path):
  """Row 9 of issue 10: opening a FIFO blocks forever; it is skipped at listing time."""
  import os
  (tmp_path / "a").mkdir()
  Image.new("RGB", (8, 8)).save(tmp_path / "a" / "0.png")
  os.mkfifo(tmp_path / "a" / "x.png")
  src = sources.folder_source(tmp_path)
  assert src.ids == ["a/0.png"]
  assert src.fingerprint["not_regular_files"] == ["a/x.png"]
  os.remove(tmp_path / "a" / "0.png")
  os.mkfifo(tmp_path / "a" / "0.png")        # replaced by a FIFO after listing
  with pytest.raises(sources.ImageLoadError, match="not a regular file"):
    src.load(0)
