"""extract_torch.write_images: an image source as a class-folder tree that folder_source reads."""
import numpy as np
import pytest

from extract_torch import sources
from extract_torch import write_images


def test_written_folder_reads_back_as_the_same_images(tmp_path):
  src = sources.procedural_source(2, size=20, seed=3)
  paths = write_images.write_folder(src, str(tmp_path / "imgs"))
  assert len(paths) == 6 and all(p.endswith(".png") for p in paths)
  back = sources.folder_source(tmp_path / "imgs")
  assert back.label_names == sorted(src.label_names)
  by_id = {i: k for k, i in enumerate(back.ids)}
  for k in range(len(src)):
    rel = f"{src.label_names[src.labels[k]]}/{k:06d}.png"
    j = by_id[rel]
    assert back.label_names[back.labels[j]] == src.label_names[src.labels[k]]
    np.testing.assert_array_equal(np.asarray(back.load(j)), np.asarray(src.load(k)))   # PNG: lossless
  with pytest.raises(FileExistsError, match="--overwrite"):
    write_images.write_folder(src, str(tmp_path / "imgs"))
  other = sources.procedural_source(1, size=20, seed=4)
  write_images.write_folder(other, str(tmp_path / "imgs"), overwrite=True)
  assert len(sources.folder_source(tmp_path / "imgs")) == 3
  assert not [p for p in tmp_path.iterdir() if p.name.startswith(".images-")]   # no temp left
