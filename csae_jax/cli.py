"""One clear line and exit status 2 for user errors in every command-line entry point.

Why: a wrong path, a bad config value or a refused overwrite is the user's to fix; a 50-line
traceback hides the one line that says what to fix. Errors of the package's own error classes
(all ValueError / OSError subclasses, see USER_ERRORS) print `<prog>: <Type>: <message>` to stderr
and exit 2 (the status argparse and absl use for usage errors). Anything else is a bug and keeps
its traceback. KeyboardInterrupt is left alone.
"""
from __future__ import annotations

import contextlib
import sys

EXIT_USER_ERROR = 2

# ValueError covers StoreError, ExportError, CheckpointError, ExtractionError, config validation;
# the OSError subclasses are missing / existing / locked paths and a full disk. KeyError is not
# here: a KeyError inside the package is a bug, not a user error.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
    PermissionError)


def _extra_user_errors() -> tuple[type[BaseException], ...]:
  from csae_jax import fileio
  from csae_jax import locks
  return (fileio.DiskFullError, locks.LockHeldError)


def one_line(err: BaseException) -> str:
  text = " ".join(str(err).split())
  return f"{type(err).__name__}: {text}"


@contextlib.contextmanager
def user_errors_exit(prog: str):
  """Context manager: a user error inside prints one line to stderr and exits with status 2."""
  try:
    yield
  except USER_ERRORS + _extra_user_errors() + (OSError,) as e:
    from csae_jax import fileio
    if isinstance(e, OSError) and not isinstance(e, USER_ERRORS + _extra_user_errors()) \
        and not fileio.is_disk_full(e):
      raise
    if fileio.is_disk_full(e) and not isinstance(e, fileio.DiskFullError):
      e = fileio.DiskFullError(28, f"no space left on the device ({' '.join(str(e).split())[:200]})")
    print(f"{prog}: {one_line(e)}", file=sys.stderr, flush=True)
    sys.exit(EXIT_USER_ERROR)
