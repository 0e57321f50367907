"""Import of the authors' HDF5 layout (group X, one dataset per layer, token_offsets)."""
import h5py
import numpy as np
import pytest

from csae_jax import store as store_lib
from extract_torch.hdf5_import import import_hdf5


def _h5(path, offsets_form="n+1"):
  rng = np.random.default_rng(0)
  counts = np.array([5, 0, 9, 3, 7])
  offs = np.concatenate([[0], np.cumsum(counts)])
  x23 = rng.normal(size=(offs[-1], 6)).astype(np.float32)
  with h5py.File(path, "w") as f:
    g = f.create_group("X")
    g["23"] = x23
    g["24"] = x23 * 2
    f["token_offsets"] = {"n+1": offs, "starts": offs[:-1],
                          "pairs": np.stack([offs[:-1], offs[1:]], 1)}[offsets_form]
    f["labels"] = np.array([0, 1, 1, 0, 2])
  return x23, offs


@pytest.mark.parametrize("form", ["n+1", "starts", "pairs"])
def test_import_round_trip(tmp_path, form):
  x, offs = _h5(tmp_path / "a.h5", form)
  path = import_hdf5(str(tmp_path / "a.h5"), str(tmp_path / "s"), layer="23", chunk_tokens=8)
  st = store_lib.ActivationStore.open(path, verify=True)
  np.testing.assert_array_equal(st.read_tokens(0, st.num_tokens), x)
  np.testing.assert_array_equal(st.token_offsets, offs)
  assert st.labels.tolist() == [0, 1, 1, 0, 2] and st.manifest["hdf5_layer"] == "23"
  assert st.image_ids == [f"h5:{i}" for i in range(5)]


def test_import_errors(tmp_path):
  _h5(tmp_path / "a.h5")
  with pytest.raises(store_lib.StoreError, match=r"X holds layers \['23', '24'\]"):
    import_hdf5(str(tmp_path / "a.h5"), str(tmp_path / "s"))
  with pytest.raises(store_lib.StoreError, match=r"no layer '7' in X; available: \['23', '24'\]"):
    import_hdf5(str(tmp_path / "a.h5"), str(tmp_path / "s"), layer="7")
  with h5py.File(tmp_path / "b.h5", "w") as f:
    f["X/23"] = np.zeros((4, 2), np.float32)
    f["token_offsets"] = np.array([0, 3, 2, 4])
  with pytest.raises(store_lib.StoreError, match="not non-decreasing"):
    import_hdf5(str(tmp_path / "b.h5"), str(tmp_path / "s"))
  import_hdf5(str(tmp_path / "a.h5"), str(tmp_path / "s"), layer="24")
  with pytest.raises(store_lib.StoreError, match="already exists"):
    import_hdf5(str(tmp_path / "a.h5"), str(tmp_path / "s"), layer="24")


def test_non_hdf5_file_is_a_store_error(tmp_path):
  (tmp_path / "a.h5").write_text("not hdf5")
  with pytest.raises(store_lib.StoreError, match="is not a readable HDF5 file"):
    import_hdf5(str(tmp_path / "a.h5"), str(tmp_path / "s"))
