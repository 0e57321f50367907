"""The activation store (csae_jax/store/): exact round trips, integrity errors, resume, combine."""
import json
import os
import shutil

import ml_dtypes
import numpy as np
import pytest

from csae_jax import store as S


def _data(seed=0, n_img=13, d=6, e=4):
  rng = np.random.default_rng(seed)
  counts = rng.integers(0, 40, n_img)
  counts[3] = 90                                   # one image longer than a chunk
  offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
  acts = rng.normal(size=(offsets[-1], d)).astype(np.float32) * 3
  labels = rng.integers(0, 3, n_img)
  ids = [f"img{i:03d}" for i in range(n_img)]
  emb = rng.normal(size=(n_img, e)).astype(np.float32)
  return acts, offsets, labels, ids, emb


def _stream(path, acts, offsets, labels, ids, emb, batch=4, chunk=32, dtype="float32",
            stop_after=None, resume=False, fingerprint=None):
  """Write through StoreWriter in batches of `batch` images; stop (no finalize) after
  `stop_after` batches to simulate an interruption."""
  w = S.StoreWriter(path, d=acts.shape[1], dtype=dtype, chunk_tokens=chunk, embedding_dim=emb.shape[1],
                    embedding_backbone="test", label_names=["a", "b", "c"], model="m",
                    hooked_module="h", split="train", resume=resume, fingerprint=fingerprint)
  i, done = w.resume_cursor, 0
  while i < len(ids):
    j = min(i + batch, len(ids))
    w.add_batch(acts[offsets[i]:offsets[j]], np.diff(offsets[i:j + 1]), labels[i:j], ids[i:j],
                emb[i:j], cursor=j)
    i, done = j, done + 1
    assert w._buffered < chunk                 # bounded memory: full chunks leave at once
    if stop_after is not None and done == stop_after:
      w._drain()
      w.close()
      return None
  return w.finalize()


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_round_trip_exact(tmp_path, dtype):
  acts, offsets, labels, ids, emb = _data()
  want = acts.astype(S.DTYPES[dtype])               # what the store holds, bit for bit
  path = _stream(tmp_path / "s", acts, offsets, labels, ids, emb, dtype=dtype)
  st = S.ActivationStore.open(path, verify=True)
  assert (st.num_tokens, st.num_images, st.d, st.dtype) == (len(acts), len(ids), 6, dtype)
  native = st.read_tokens_native(0, st.num_tokens)
  assert native.dtype == S.DTYPES[dtype]
  np.testing.assert_array_equal(native.view(np.uint8), want.view(np.uint8))
  np.testing.assert_array_equal(st.read_tokens(0, st.num_tokens), want.astype(np.float32))
  np.testing.assert_array_equal(st.token_offsets, offsets)
  np.testing.assert_array_equal(st.labels, labels)
  assert st.image_ids == ids
  np.testing.assert_array_equal(st.embeddings(), emb)
  for i in (0, 3, 12):
    np.testing.assert_array_equal(st.image_tokens(i), want[offsets[i]:offsets[i + 1]].astype(np.float32))
  rows = np.array([5, 0, len(acts) - 1, 5])
  np.testing.assert_array_equal(st.read_rows(rows), want[rows].astype(np.float32))
  m = st.manifest
  for key in S.REQUIRED_KEYS:
    assert key in m
  assert m["embedding"] == {"backbone": "test", "dim": 4} and m["label_names"] == ["a", "b", "c"]
  assert len(m["checksums"]["activations"]) == -(-len(acts) // 32)
  # the per-chunk checksum is the sha256 of the chunk's rows, independently recomputed
  import hashlib
  assert m["checksums"]["activations"][1] == hashlib.sha256(want[32:64].tobytes()).hexdigest()


def test_bfloat16_storage_is_round_to_nearest_even(tmp_path):
  x = np.array([[1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, -7.3e-3, 3.0e38]], np.float32)
  path = S.write_store(tmp_path / "s", x, [0, 1], dtype="bfloat16")
  got = S.ActivationStore.open(path).read_tokens(0, 1)
  np.testing.assert_array_equal(got, x.astype(ml_dtypes.bfloat16).astype(np.float32))
  assert got[0, 0] == 1.0 and got[0, 1] == 1.0 + 2 ** -6


def test_write_store_equals_streaming_and_combine(tmp_path):
  acts, offsets, labels, ids, emb = _data(1)
  a = _stream(tmp_path / "a", acts, offsets, labels, ids, emb)
  b = S.write_store(tmp_path / "b", acts, offsets, labels, ids, emb, label_names=["a", "b", "c"],
                    chunk_tokens=32, model="m", hooked_module="h", split="train",
                    embedding_backbone="test")
  k = 6                                                       # shards: images [0,6) and [6,13)
  p1 = S.write_store(tmp_path / "p1", acts[:offsets[k]], offsets[:k + 1], labels[:k], ids[:k],
                     emb[:k], ["a", "b", "c"], chunk_tokens=32, model="m", hooked_module="h",
                     split="train", embedding_backbone="test")
  p2 = S.write_store(tmp_path / "p2", acts[offsets[k]:], offsets[k:] - offsets[k], labels[k:],
                     ids[k:], emb[k:], ["a", "b", "c"], chunk_tokens=32, model="m",
                     hooked_module="h", split="train", embedding_backbone="test")
  c = S.combine_stores([p1, p2], tmp_path / "c")
  ref = S.ActivationStore.open(a, verify=True)
  for path in (b, c):
    st = S.ActivationStore.open(path, verify=True)
    assert st.manifest["checksums"] == ref.manifest["checksums"]
    np.testing.assert_array_equal(st.read_tokens(0, st.num_tokens), acts)
    assert st.image_ids == ids


def test_combine_refuses_mismatched_stores(tmp_path):
  acts, offsets, labels, ids, emb = _data(2)
  p1 = S.write_store(tmp_path / "p1", acts, offsets, labels, ids, model="m1")
  p2 = S.write_store(tmp_path / "p2", acts, offsets, labels, [i + "x" for i in ids], model="m2")
  with pytest.raises(S.StoreError, match="model differs"):
    S.combine_stores([p1, p2], tmp_path / "c")
  with pytest.raises(ValueError, match="duplicate image ids"):
    S.combine_stores([p1, p1], tmp_path / "c")
  assert not os.path.exists(tmp_path / "c")


def test_interrupted_writer_resumes_to_the_same_store(tmp_path):
  acts, offsets, labels, ids, emb = _data(3)
  ref = S.ActivationStore.open(_stream(tmp_path / "ref", acts, offsets, labels, ids, emb))
  path = tmp_path / "s"
  for stop in (1, 2):         # interrupted twice, at different batches
    assert _stream(path, acts, offsets, labels, ids, emb, stop_after=stop, resume=True) is None
  # the committed state restarts at a batch boundary whose tokens are all on disk
  w = S.StoreWriter(path, d=6, chunk_tokens=32, embedding_dim=4, resume=True)
  # (offsets 0,32,35,42,132,...,228: after 2 batches chunks [0, 224) are written, so the last
  # boundary fully on disk is image 4 at token 132)
  assert w.resume_cursor == 4
  assert w.num_images == w.resume_cursor
  w.close()
  st = S.ActivationStore.open(_stream(path, acts, offsets, labels, ids, emb, resume=True),
                              verify=True)
  assert st.manifest["checksums"] == ref.manifest["checksums"]
  np.testing.assert_array_equal(st.read_tokens(0, st.num_tokens), acts)
  np.testing.assert_array_equal(st.embeddings(), emb)
  assert st.image_ids == ids and not os.path.exists(str(path) + S.PARTIAL_SUFFIX)


def test_resume_refuses_changed_settings_and_unasked_partials(tmp_path):
  acts, offsets, labels, ids, emb = _data(4)
  path = tmp_path / "s"
  _stream(path, acts, offsets, labels, ids, emb, stop_after=2, fingerprint={"layer": 23})
  with pytest.raises(S.StoreError, match="fingerprint.layer: 23 -> 24"):
    _stream(path, acts, offsets, labels, ids, emb, resume=True, fingerprint={"layer": 24})
  with pytest.raises(S.StoreError, match="unfinished extraction"):
    S.StoreWriter(path, d=6, chunk_tokens=32)
  with pytest.raises(S.StoreError, match="no activation store.*unfinished extraction"):
    S.ActivationStore.open(path)


def test_overwrite_refused_then_allowed(tmp_path):
  acts, offsets, labels, ids, emb = _data(5)
  path = S.write_store(tmp_path / "s", acts, offsets)
  with pytest.raises(S.StoreError, match="already exists.*overwrite"):
    S.write_store(path, acts[:5], [0, 5])
  assert S.ActivationStore.open(path, verify=True).num_tokens == len(acts)   # untouched
  S.write_store(path, acts[:5], [0, 5], overwrite=True)
  assert S.ActivationStore.open(path, verify=True).num_tokens == 5


@pytest.fixture
def good_store(tmp_path):
  acts, offsets, labels, ids, emb = _data(6)
  return S.write_store(tmp_path / "s", acts, offsets, labels, ids, chunk_tokens=32)


def test_bit_flip_is_caught(good_store):
  f = S.chunk_file(good_store, 2)
  raw = bytearray(open(f, "rb").read())
  raw[17] ^= 0x10
  open(f, "wb").write(bytes(raw))
  st = S.ActivationStore.open(good_store)             # structure is intact
  with pytest.raises(S.StoreError, match="activation chunk 2 "):
    st.verify()
  with pytest.raises(S.StoreError, match="verify=True"):
    st.read_tokens(64, 70)
  np.testing.assert_array_equal(st.read_tokens(0, 64).shape, (64, 6))   # other chunks still read


def test_swapped_valid_chunk_fails_checksum(good_store):
  shutil.copy(S.chunk_file(good_store, 1), S.chunk_file(good_store, 0))  # crc-valid, wrong data
  with pytest.raises(S.StoreError, match="chunk 0 .*checksum mismatch"):
    S.ActivationStore.open(good_store, verify=True)


def test_truncated_and_missing_chunks(good_store):
  f = S.chunk_file(good_store, 1)
  raw = open(f, "rb").read()
  open(f, "wb").write(raw[:100])
  with pytest.raises(S.StoreError, match="chunk 1 is truncated.*100 bytes"):
    S.ActivationStore.open(good_store)
  os.remove(f)
  with pytest.raises(S.StoreError, match="chunk 1 .*missing"):
    S.ActivationStore.open(good_store)


@pytest.mark.parametrize("edit,match", [
    (lambda m: m.update(num_tokens=m["num_tokens"] + 1), "activations array has shape"),
    (lambda m: m.update(d=7), "activations array has shape"),
    (lambda m: m.update(dtype="float16"), "dtype float32 but the manifest says float16"),
    (lambda m: m.update(num_images=m["num_images"] - 1), "token_offsets has shape"),
    (lambda m: m.update(chunk_tokens=16), "chunk shape"),
    (lambda m: m["checksums"]["activations"].pop(), "checksums, the array has"),
    (lambda m: m.pop("d"), "lacks keys \\['d'\\]"),
    (lambda m: m.update(format_version=99), "format_version 99"),
    (lambda m: m.update(label_names=["only"]), "does not fit the 1 label_names"),
])
def test_manifest_array_mismatch(good_store, edit, match):
  mpath = os.path.join(good_store, S.MANIFEST)
  m = json.load(open(mpath))
  edit(m)
  json.dump(m, open(mpath, "w"))
  with pytest.raises(S.StoreError, match=match):
    S.ActivationStore.open(good_store)


def test_small_arrays_checked(good_store):
  ipath = os.path.join(good_store, S.IMAGE_IDS)
  ids = json.load(open(ipath))["image_ids"]
  json.dump({"image_ids": ids[::-1]}, open(ipath, "w"))
  with pytest.raises(S.StoreError, match="image_ids checksum"):
    S.ActivationStore.open(good_store, verify=True)
  open(os.path.join(good_store, S.MANIFEST), "w").write("{not json")
  with pytest.raises(S.StoreError, match="not valid JSON"):
    S.ActivationStore.open(good_store)


def test_bad_inputs_lose_nothing(tmp_path):
  acts, offsets, labels, ids, emb = _data(7)
  w = S.StoreWriter(tmp_path / "s", d=6, chunk_tokens=32)
  w.add_batch(acts[:offsets[2]], np.diff(offsets[:3]), labels[:2], ids[:2], cursor=2)
  bad = acts[offsets[2]:offsets[4]].copy()
  bad[3, 1] = np.nan
  with pytest.raises(ValueError, match="img002.*NaN"):
    w.add_batch(bad, np.diff(offsets[2:5]), labels[2:4], ids[2:4], cursor=4)
  with pytest.raises(ValueError, match="d=6"):
    w.add_batch(acts[:3, :5], [3], [0], ["x"])
  with pytest.raises(ValueError, match="sum to"):
    w.add_batch(acts[:3], [2], [0], ["x"])
  with pytest.raises(ValueError, match="duplicate image ids"):
    w.add_batch(acts[:3], [3], [0], ["img000"])
  with pytest.raises(ValueError, match="embeddings must be given"):
    w.add_batch(acts[:3], [3], [0], ["x"], embeddings=np.zeros((1, 4)))
  w.add_batch(acts[offsets[2]:offsets[4]], np.diff(offsets[2:5]), labels[2:4], ids[2:4], cursor=4)
  st = S.ActivationStore.open(w.finalize(), verify=True)
  np.testing.assert_array_equal(st.read_tokens(0, st.num_tokens), acts[:offsets[4]])
  with pytest.raises(S.StoreError, match="--embedding_backbone"):
    st.embeddings()
  with pytest.raises(ValueError, match="outside"):
    st.read_tokens(0, st.num_tokens + 1)
  with pytest.raises(ValueError, match="token indices"):
    st.read_rows([-1])
  with pytest.raises(ValueError, match="dtype must be one of"):
    S.StoreWriter(tmp_path / "t", d=6, dtype="int8")


def test_empty_images_and_empty_store(tmp_path):
  x = np.ones((3, 2), np.float32)
  st = S.ActivationStore.open(S.write_store(tmp_path / "a", x, [0, 0, 3, 3]), verify=True)
  assert st.tokens_per_image.tolist() == [0, 3, 0]
  assert st.token_image.tolist() == [1, 1, 1]
  st = S.ActivationStore.open(S.write_store(tmp_path / "b", x[:0], [0]), verify=True)
  assert (st.num_tokens, st.num_images) == (0, 0)


def _rewrite_array(store_path, name, edit):
  """Rewrite a small array of the store in place with valid zarr chunks (crc-valid, wrong data)."""
  from csae_jax.store.format import _open_array
  arr = _open_array(os.path.join(store_path, name), name)
  value = np.asarray(arr.read().result())
  new = edit(value.copy())
  assert not np.array_equal(new, value)
  arr.write(new).result()


@pytest.fixture()
def store_with_embeddings(tmp_path):
  acts, offsets, labels, ids, emb = _data(8)
  path = str(tmp_path / "e")
  _stream(path, acts, offsets, labels, ids, emb)
  return path


def _move_one_token(o):
  o[2] += 1 if o[2] < o[3] else -1          # still non-decreasing, same start and end
  return o


@pytest.mark.parametrize("name, edit", [
    ("token_offsets", _move_one_token),
    ("labels", lambda l: np.where(np.arange(len(l)) == 4, (l + 1) % 3, l)),
    ("embeddings", lambda e: e + np.float32(0.5) * (np.arange(e.size).reshape(e.shape) == 7)),
])
def test_verify_checks_offsets_labels_and_embeddings(store_with_embeddings, name, edit):
  S.ActivationStore.open(store_with_embeddings, verify=True)
  _rewrite_array(store_with_embeddings, name, edit)
  st = S.ActivationStore.open(store_with_embeddings)          # structurally valid
  with pytest.raises(S.StoreError, match=f"{name} checksum mismatch"):
    st.verify()
  with pytest.raises(S.StoreError, match=f"{name} checksum mismatch"):
    S.ActivationStore.open(store_with_embeddings, verify=True)


def test_decreasing_offsets_refused(tmp_path, good_store):
  x = np.ones((6, 2), np.float32)
  with pytest.raises(ValueError, match="non-decreasing"):
    S.write_store(tmp_path / "w", x, [0, 4, 2, 6])
  with pytest.raises(ValueError, match=">= 0"):
    S.StoreWriter(tmp_path / "v", d=2).add_batch(x, [4, -2, 4], [0, 0, 0], ["a", "b", "c"])

  def swap(o):
    o[2], o[3] = o[3], o[2]                  # start and end kept; one step goes down
    return o
  offsets = np.asarray(S.ActivationStore.open(good_store).token_offsets)
  assert offsets[3] > offsets[2]
  _rewrite_array(good_store, "token_offsets", swap)
  with pytest.raises(S.StoreError, match="non-decreasing"):
    S.ActivationStore.open(good_store)


@pytest.mark.parametrize("kw, match", [
    (dict(d=0), "d must be a positive integer, got 0"),
    (dict(d=-3), "d must be a positive integer"),
    (dict(d=2.5), "d must be a positive integer, got 2.5"),
    (dict(d=4, chunk_tokens=0), "chunk_tokens must be a positive integer"),
    (dict(d=4, chunk_tokens=8.0), "chunk_tokens must be a positive integer"),
    (dict(d=4, embedding_dim=0), "embedding_dim must be a positive integer or None"),
    (dict(d=4, embedding_dim="3"), "embedding_dim must be a positive integer or None"),
])
def test_writer_settings_validated_before_anything_is_written(tmp_path, kw, match):
  with pytest.raises(ValueError, match=match):
    S.StoreWriter(tmp_path / "s", **kw)
  assert os.listdir(tmp_path) == []


def test_writer_resumed_from_a_finished_partial_closes_and_finalizes(tmp_path):
  """Killed after the manifest was written but before the rename (mutation gap writer.py close:
  `f is not None and not f.closed`): such a writer has no logs open; close() must not fail and must
  release the lock, and a later resume renames the finished store into place unchanged."""
  acts, offsets, labels, ids, emb = _data(6)
  path = tmp_path / "s"
  ref = S.ActivationStore.open(_stream(path, acts, offsets, labels, ids, emb))
  sums = ref.manifest["checksums"]
  partial = str(path) + S.PARTIAL_SUFFIX
  os.rename(path, partial)                        # the state of a kill just before the rename
  assert not os.path.exists(os.path.join(partial, S.PROGRESS))
  w = S.StoreWriter(path, d=6, chunk_tokens=32, embedding_dim=4, resume=True)
  assert w.done and w.resume_cursor == 0
  w.close()                                       # the caller stops without finalizing
  assert os.path.isdir(partial) and not os.path.exists(path)
  w = S.StoreWriter(path, d=6, chunk_tokens=32, embedding_dim=4, resume=True)  # lock released
  assert w.finalize() == str(path)
  st = S.ActivationStore.open(path, verify=True)
  assert st.manifest["checksums"] == sums and not os.path.exists(partial)
  np.testing.assert_array_equal(st.read_tokens(0, st.num_tokens), acts)


def test_progress_commits_a_boundary_that_ends_exactly_on_a_chunk(tmp_path):
  """A batch ending exactly at a chunk boundary (32 tokens, chunk 32) is committed as soon as
  that chunk is written (mutation gap writer.py _maybe_commit `<=`): progress.json records the
  boundary and a resume starts after it, with no batch redone."""
  rng = np.random.default_rng(7)
  x = rng.normal(size=(32, 3)).astype(np.float32)
  path = tmp_path / "s"
  w = S.StoreWriter(path, d=3, chunk_tokens=32)
  w.add_batch(x, [12, 20], [0, 1], ["a", "b"], cursor=2)     # 12 + 20 = 32 = one full chunk
  w._drain()
  w.close()
  with open(os.path.join(str(path) + S.PARTIAL_SUFFIX, S.PROGRESS)) as f:
    boundary = json.load(f)["boundary"]
  assert boundary == {"images": 2, "tokens": 32, "cursor": 2, "skipped": 0}
  w = S.StoreWriter(path, d=3, chunk_tokens=32, resume=True)
  assert w.resume_cursor == 2 and w.num_images == 2 and w._buffered == 0
  st = S.ActivationStore.open(w.finalize(), verify=True)
  np.testing.assert_array_equal(st.read_tokens(0, 32), x)
  assert st.image_ids == ["a", "b"] and list(st.token_offsets) == [0, 12, 32]
