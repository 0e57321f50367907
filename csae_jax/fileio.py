"""Atomic file and directory writes: the one helper every writer in the package uses.

Why: a reader must see either the old file or the complete new one, never a half-written file
(a kill, a full disk), and a failed write must leave no litter. Each write goes to a temp file in
the destination's directory (same filesystem, so the rename is atomic), is fsync'ed, gets the
umask's usual mode (mkstemp would leave it 0600: unreadable to the rest of a shared cluster), and
is renamed over the destination. On any error the temp file is removed and the error re-raised.
Disk-full errors (ENOSPC, EDQUOT) become `DiskFullError` with one line naming the path.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, IO

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
  """No space left while writing; nothing partial was left behind."""


def umask() -> int:
  """The process umask (read without changing it for longer than one call)."""
  mask = os.umask(0)
  os.umask(mask)
  return mask


def file_mode() -> int:
  return 0o666 & ~umask()


def dir_mode() -> int:
  return 0o777 & ~umask()


# how tensorstore / Orbax report ENOSPC: a ValueError whose text carries the OS error
_NO_SPACE_TEXT = ("No space left on device", "os_error_code='28'", "Disk quota exceeded")


def is_disk_full(err: BaseException) -> bool:
  """ENOSPC / EDQUOT anywhere in the exception chain (OSError errno or library message text)."""
  seen = set()
  while err is not None and id(err) not in seen:
    seen.add(id(err))
    if isinstance(err, OSError) and err.errno in _NO_SPACE:
      return True
    if any(t in str(err) for t in _NO_SPACE_TEXT):
      return True
    err = err.__cause__ or err.__context__
  return False


def _fsync_dir(path: Path) -> None:
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def _replace_atomic(path, write_file: Callable[[str], Any], make_parents: bool) -> Path:
  """write_file(tmp) on a temp name beside `path`; then mode, rename, directory fsync.

  On any error the temp file is removed and nothing at `path` changes; a full disk becomes
  DiskFullError naming the file.
  """
  path = Path(path)
  if make_parents:
    path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  os.close(fd)
  try:
    write_file(tmp)
    os.chmod(tmp, file_mode())
    os.replace(tmp, path)
  except BaseException as e:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    if is_disk_full(e) and not isinstance(e, DiskFullError):
      raise DiskFullError(errno.ENOSPC, f"no space left on the device while writing {path}; "
                          "nothing was changed") from e
    raise
  _fsync_dir(path.parent)
  return path


def write_atomic(path, write: Callable[[IO], Any], *, binary: bool = False,
                 make_parents: bool = True) -> Path:
  """Calls write(f) on a temp file beside `path`, then renames it to `path`."""
  def write_file(tmp):
    with open(tmp, "wb" if binary else "w") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
  return _replace_atomic(path, write_file, make_parents)


def write_text_atomic(path, text: str) -> Path:
  return write_atomic(path, lambda f: f.write(text))


def write_bytes_atomic(path, data: bytes) -> Path:
  return write_atomic(path, lambda f: f.write(data), binary=True)


def write_json_atomic(path, obj, *, indent: int = 2, default=None) -> Path:
  def write(f):
    json.dump(obj, f, indent=indent, sort_keys=True, default=default)
    f.write("\n")
  return write_atomic(path, write)


def write_lines_atomic(path, records) -> Path:
  """JSON lines, one per record (the metrics rewrite on resume)."""
  def write(f):
    for r in records:
      f.write(json.dumps(r) + "\n")
  return write_atomic(path, write)


def write_with_path_atomic(path, write: Callable[[str], Any]) -> Path:
  """For writers that take a file name (matplotlib, safetensors): write(tmp_name), then rename."""
  def write_file(tmp):
    write(tmp)
    with open(tmp, "rb") as f:
      os.fsync(f.fileno())
  return _replace_atomic(path, write_file, True)


def make_temp_dir(beside: Path, tag: str = "tmp") -> Path:
  """A fresh directory next to `beside` (same filesystem) with the umask's usual mode."""
  beside = Path(beside)
  beside.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f".{beside.name}.{tag}-", dir=beside.parent))
  os.chmod(tmp, dir_mode())
  return tmp


def replace_dir(tmp: Path, out_dir: Path) -> None:
  """Renames the finished `tmp` to `out_dir`, moving an existing out_dir aside first."""
  tmp, out_dir = Path(tmp), Path(out_dir)
  if out_dir.exists():
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
  else:
    os.replace(tmp, out_dir)
  _fsync_dir(out_dir.parent)


def write_dir_atomic(out_dir, files: dict[str, Callable[[Path], Any]]) -> Path:
  """Each files[name](path) writes one file into a temp dir beside out_dir; then one rename."""
  out_dir = Path(out_dir)
  tmp = make_temp_dir(out_dir)
  try:
    for name, writer in files.items():
      writer(tmp / name)
      os.chmod(tmp / name, file_mode())
    replace_dir(tmp, out_dir)
  except BaseException as e:
    shutil.rmtree(tmp, ignore_errors=True)
    if is_disk_full(e) and not isinstance(e, DiskFullError):
      raise DiskFullError(errno.ENOSPC, f"no space left on the device while writing {out_dir}; "
                          "nothing was changed") from e
    raise
  return out_dir


def check_overwrite_target(path, is_expected_kind: Callable[[Path], bool], kind: str) -> None:
  """--overwrite may replace `path` only if it is empty or already holds `kind` output (row 4:
  an overwrite flag must never delete an unrelated directory). kind: what is written, with its
  article ("an activation store")."""
  path = Path(path)
  if not path.exists():
    return
  if not path.is_dir():
    raise FileExistsError(f"{path} exists and is not a directory; refusing to overwrite it with "
                          f"{kind}")
  if any(path.iterdir()) and not is_expected_kind(path):
    raise FileExistsError(f"{path} is not empty and does not hold {kind}; refusing to delete "
                          "it (--overwrite only replaces a previous output of the same kind)")
