"""csae_jax/fileio.py: atomic replace, umask modes, cleanup on failure; csae_jax/locks.py basics."""
import os
import stat

import pytest

from csae_jax import fileio
from csae_jax import locks


def test_write_atomic_replaces_with_umask_modes(tmp_path):
  old = os.umask(0o027)
  try:
    p = fileio.write_json_atomic(tmp_path / "sub" / "a.json", {"x": 1})
    d = fileio.make_temp_dir(tmp_path / "out")
  finally:
    os.umask(old)
  assert p.read_text() == '{\n  "x": 1\n}\n'
  assert stat.S_IMODE(p.stat().st_mode) == 0o640
  assert stat.S_IMODE(d.stat().st_mode) == 0o750


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
  fileio.write_text_atomic(tmp_path / "a.txt", "old")

  def write(f):
    f.write("new")
    raise RuntimeError("writer failed")
  with pytest.raises(RuntimeError, match="writer failed"):
    fileio.write_atomic(tmp_path / "a.txt", write)
  assert (tmp_path / "a.txt").read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]


def test_write_lines_atomic(tmp_path):
  fileio.write_lines_atomic(tmp_path / "m.jsonl", [{"step": 1}, {"step": 2}])
  assert (tmp_path / "m.jsonl").read_text() == '{"step": 1}\n{"step": 2}\n'


def test_check_overwrite_target(tmp_path):
  (tmp_path / "e").mkdir()
  fileio.check_overwrite_target(tmp_path / "e", lambda p: False, "a thing")   # empty: fine
  (tmp_path / "e" / "f").write_text("x")
  with pytest.raises(FileExistsError, match="not empty and does not hold a thing"):
    fileio.check_overwrite_target(tmp_path / "e", lambda p: False, "a thing")
  fileio.check_overwrite_target(tmp_path / "e", lambda p: True, "a thing")
  with pytest.raises(FileExistsError, match="is not a directory"):
    fileio.check_overwrite_target(tmp_path / "e" / "f", lambda p: True, "a thing")


def test_lock_is_exclusive_and_released(tmp_path):
  with locks.workdir_lock(tmp_path) as held:
    assert held.held and (tmp_path / locks.LOCK_NAME).exists()
    with pytest.raises(locks.LockHeldError, match=f"pid {os.getpid()}"):
      locks.workdir_lock(tmp_path).acquire()
  assert not (tmp_path / locks.LOCK_NAME).exists()
  (tmp_path / locks.LOCK_NAME).write_text("garbage")
  with pytest.raises(locks.LockHeldError, match="unreadable"):
    locks.workdir_lock(tmp_path).acquire()
