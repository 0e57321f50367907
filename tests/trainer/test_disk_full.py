"""Row 10 of issue 10: a disk that fills up during a checkpoint gives one clear error line and no
litter, also on a rerun. A real full disk: a 100 KiB tmpfs in a private mount namespace (skipped
where unshare / tmpfs are not allowed). Plus the atomic writer's own cleanup, in process."""
import errno
import os
import shutil
import subprocess

import pytest

from csae_jax import fileio

from trainer_helpers import launch_cmd
from trainer_helpers import subprocess_env


def _can_mount() -> bool:
  if shutil.which("unshare") is None:
    return False
  probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                         capture_output=True)
  return probe.returncode == 0


def _litter(root):
  out = []
  for dirpath, dirnames, filenames in os.walk(root):
    out += [os.path.join(dirpath, n) for n in dirnames + filenames
            if "tmp" in n or n.endswith(".partial") or n.startswith(".")]
  return out


@pytest.mark.slow
@pytest.mark.skipif(not _can_mount(), reason="needs unshare -rm and tmpfs")
def test_disk_full_during_a_checkpoint(tmp_path):
  mnt = tmp_path / "small"
  mnt.mkdir()
  wd = mnt / "run"
  cmd = " ".join(launch_cmd("tiny_relu", wd, "--config.steps=40", "--config.progress=never"))
  script = f"mount -t tmpfs -o size=100k tmpfs {mnt} && {cmd}; echo rc=$?; {cmd}; echo rc=$?; " \
           f"find {mnt}"
  out = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=subprocess_env(),
                       capture_output=True, text=True, timeout=300)
  text = out.stdout + out.stderr
  assert text.count("rc=2") == 2, text[-3000:]
  errors = [l for l in text.splitlines() if l.startswith("train: ")]
  assert len(errors) == 2 and all("DiskFullError" in l and "no space left" in l for l in errors)
  assert "Traceback" not in text, text[-3000:]
  listed = [l for l in out.stdout.splitlines() if l.startswith(str(mnt))]
  assert listed and not [l for l in listed if "tmp" in os.path.basename(l)], listed


def test_atomic_write_on_a_full_disk_leaves_nothing(tmp_path):
  def write(f):
    f.write("partial")
    raise OSError(errno.ENOSPC, "No space left on device")
  (tmp_path / "a.json").write_text("old")
  with pytest.raises(fileio.DiskFullError, match="a.json; nothing was changed"):
    fileio.write_atomic(tmp_path / "a.json", write)
  assert os.listdir(tmp_path) == ["a.json"] and (tmp_path / "a.json").read_text() == "old"
  with pytest.raises(fileio.DiskFullError):
    fileio.write_dir_atomic(tmp_path / "d", {"x": lambda p: write(open(p, "w"))})
  assert os.listdir(tmp_path) == ["a.json"]


def test_tensorstore_style_messages_count_as_disk_full():
  assert fileio.is_disk_full(ValueError("RESOURCE_EXHAUSTED: ... [os_error_code='28']"))
  assert not fileio.is_disk_full(ValueError("RESOURCE_EXHAUSTED: out of memory"))


def test_echoes_of_a_full_disk_are_silenced_and_other_errors_still_print(capsys, monkeypatch):
  """After the one DiskFullError line, library threads' 'Event loop is closed' / ENOSPC
  tracebacks are dropped; any other exception still reaches the original hooks."""
  import sys
  import threading

  from csae_jax.trainer import checkpoint as ckpt_lib
  seen = []
  monkeypatch.setattr(sys, "excepthook", lambda k, e, tb: seen.append(("sys", str(e))))
  monkeypatch.setattr(threading, "excepthook", lambda a: seen.append(("thread", str(a.exc_value))))
  monkeypatch.setattr(sys, "unraisablehook", lambda a: seen.append(("unraisable", str(a.exc_value))))
  ckpt_lib.silence_library_echoes()
  sys.excepthook(RuntimeError, RuntimeError("Event loop is closed"), None)
  sys.excepthook(OSError, OSError(errno.ENOSPC, "No space left on device"), None)
  sys.excepthook(ValueError, ValueError("a real bug"), None)

  class Args:
    exc_value = RuntimeError("Event loop is closed")
  threading.excepthook(Args)
  Args.exc_value = KeyError("other")
  threading.excepthook(Args)
  sys.unraisablehook(Args)
  assert seen == [("sys", "a real bug"), ("thread", "'other'"), ("unraisable", "'other'")]
