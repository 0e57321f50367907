"""An exclusive lock per work directory / output: one trainer per workdir, one extraction per --out.

Why: two processes writing one run interleave metrics lines and race on checkpoints and renames.
The lock is a file created with O_CREAT | O_EXCL (atomic on local filesystems and NFSv3+) holding
the holder's pid, host and start time, so the refusal names who holds it. A lock left by a process
that died (SIGKILL, OOM) on THIS host is taken over with a warning; one from another host cannot be
checked and is refused, naming the file to delete once the holder is known to be dead.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

from absl import logging

LOCK_NAME = ".lock"


class LockHeldError(RuntimeError):
  """Another live process holds the lock."""


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _read(path: Path) -> dict | None:
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return None


def _describe(holder: dict) -> str:
  started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("start_time", 0)))
  return (f"pid {holder.get('pid')} on host {holder.get('host')} (started {started}, "
          f"{holder.get('what', '?')})")


class Lock:
  """Context manager holding `lock_path` exclusively; `what` says what the holder is doing."""

  def __init__(self, lock_path, what: str):
    self.path = Path(lock_path)
    self.what = what
    self.held = False

  def acquire(self) -> "Lock":
    self.path.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "start_time": time.time(),
          "what": self.what}
    for _ in range(3):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
      except FileExistsError:
        self._take_over_if_stale()
        continue
      with os.fdopen(fd, "w") as f:
        json.dump(me, f)
      self.held = True
      return self
    holder = _read(self.path) or {}
    raise LockHeldError(f"{self.path.parent} is in use by {_describe(holder)}; wait for it to "
                        f"finish or stop it (if it is dead, delete {self.path})")

  def _take_over_if_stale(self) -> None:
    holder = _read(self.path)
    if holder is None:   # being written right now, or garbage: give the writer a moment
      time.sleep(0.05)
      holder = _read(self.path)
      if holder is None:
        raise LockHeldError(f"{self.path} exists but is unreadable; if no process is using "
                            f"{self.path.parent}, delete it")
    same_host = holder.get("host") == socket.gethostname()
    pid = int(holder.get("pid", -1))
    if not same_host or pid == os.getpid() or _pid_alive(pid):
      raise LockHeldError(f"{self.path.parent} is in use by {_describe(holder)}; wait for it to "
                          f"finish or stop it (if it is dead, delete {self.path})")
    logging.warning("taking over the stale lock %s of %s, which is no longer running",
                    self.path, _describe(holder))
    stale = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
      os.replace(self.path, stale)   # only one contender wins the rename's source
      stale.unlink()

  def release(self) -> None:
    if self.held:
      with contextlib.suppress(FileNotFoundError):
        holder = _read(self.path)
        if holder and holder.get("pid") == os.getpid():
          self.path.unlink()
      self.held = False

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
    return False


def workdir_lock(workdir) -> Lock:
  return Lock(Path(workdir) / LOCK_NAME, "training")


def output_lock(out) -> Lock:
  """For outputs written as `<out>.partial` then renamed: the lock sits beside them."""
  out = Path(out)
  return Lock(out.with_name(out.name + ".lock"), f"writing {out.name}")
