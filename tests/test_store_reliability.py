"""Issue 10 rows for the store: all-zero chunks (3), --overwrite of an unrelated directory (4), one
writer per output (5), malformed manifest fields (12); and the umask's modes (15)."""
import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from csae_jax import locks
from csae_jax import store as S


def _acts(n=40, d=4, seed=0):
  return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_all_zero_chunk_round_trips(tmp_path):
  acts = _acts()
  acts[8:16] = 0.0                       # chunk 1 (chunk_tokens=8) is all zeros
  path = S.write_store(str(tmp_path / "s"), acts, [0, 20, 40], chunk_tokens=8)
  assert os.path.isfile(S.chunk_file(path, 1))
  st = S.ActivationStore.open(path, verify=True)
  np.testing.assert_array_equal(st.read_tokens(0, 40), acts)


def test_store_without_a_zero_chunk_file_still_opens_but_other_missing_chunks_fail(tmp_path):
  """Stores written before the fix have no file for an all-zero chunk: accepted, because its
  manifest checksum is that of zeros; a missing chunk with real data is still an error."""
  acts = _acts()
  acts[8:16] = 0.0
  path = S.write_store(str(tmp_path / "s"), acts, [0, 20, 40], chunk_tokens=8)
  os.remove(S.chunk_file(path, 1))
  st = S.ActivationStore.open(path, verify=True)
  np.testing.assert_array_equal(st.read_tokens(0, 40), acts)
  os.remove(S.chunk_file(path, 2))
  with pytest.raises(S.StoreError, match="chunk 2 .* is missing"):
    S.ActivationStore.open(path)


def test_overwrite_refuses_a_directory_that_is_not_a_store(tmp_path):
  victim = tmp_path / "results"
  victim.mkdir()
  (victim / "paper.pdf").write_bytes(b"%PDF")
  with pytest.raises(S.StoreError, match="does not hold an activation store"):
    S.write_store(str(victim), _acts(), [0, 40], overwrite=True)
  assert (victim / "paper.pdf").read_bytes() == b"%PDF"
  assert sorted(os.listdir(tmp_path)) == ["results"]         # no .partial / lock litter
  empty = tmp_path / "empty"
  empty.mkdir()
  S.write_store(str(empty), _acts(), [0, 40], overwrite=True)    # empty: allowed
  S.write_store(str(empty), _acts(seed=1), [0, 40], overwrite=True)  # a store: replaced
  np.testing.assert_array_equal(S.ActivationStore.open(str(empty)).read_tokens(0, 40),
                                _acts(seed=1))


@pytest.mark.parametrize("field,value,message", [
    ("label_names", 5, "field 'label_names'"),
    ("label_names", [1, 2], "field 'label_names'"),
    ("embedding", "x", "field 'embedding'"),
    ("embedding", {"backbone": "b", "dim": "4"}, r"field 'embedding\.dim'"),
])
def test_malformed_manifest_fields_are_named(tmp_path, field, value, message):
  path = S.write_store(str(tmp_path / "s"), _acts(), [0, 40])
  mpath = os.path.join(path, S.MANIFEST)
  with open(mpath) as f:
    manifest = json.load(f)
  manifest[field] = value
  with open(mpath, "w") as f:
    json.dump(manifest, f)
  with pytest.raises(S.StoreError, match=message):
    S.ActivationStore.open(path)


def test_second_writer_on_one_output_is_refused_naming_the_holder(tmp_path):
  out = str(tmp_path / "s")
  holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    lock = tmp_path / "s.lock"
    lock.write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename,
                                "start_time": 0, "what": "writing s"}))
    with pytest.raises(locks.LockHeldError, match=f"pid {holder.pid} on host"):
      S.write_store(out, _acts(), [0, 40])
    assert not os.path.exists(out + S.PARTIAL_SUFFIX)
  finally:
    holder.kill()
    holder.wait()
  # the holder is dead now: its lock is stale and taken over
  path = S.write_store(out, _acts(), [0, 40])
  assert S.ActivationStore.open(path).num_tokens == 40
  assert not os.path.exists(tmp_path / "s.lock")            # released after finalize


def test_two_live_writers_in_one_process_conflict(tmp_path):
  w = S.StoreWriter(str(tmp_path / "s"), d=4)
  try:
    with pytest.raises(locks.LockHeldError, match="is in use by pid"):
      S.StoreWriter(str(tmp_path / "s"), d=4, resume=True)
  finally:
    w.close()
  S.StoreWriter(str(tmp_path / "s"), d=4, resume=True).close()   # released by close()


def test_store_files_follow_the_umask(tmp_path):
  old = os.umask(0o022)
  try:
    path = S.write_store(str(tmp_path / "s"), _acts(), [0, 40])
  finally:
    os.umask(old)
  for name in (S.MANIFEST, S.IMAGE_IDS):
    assert stat.S_IMODE(os.stat(os.path.join(path, name)).st_mode) == 0o644
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o755
