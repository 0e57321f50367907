"""Code-health guards (issue 9): small files and functions in the packages, no sys.path edits, ruff.

The limits are the house rules: no file over 600 lines and no function over 100 lines in
csae_jax/, extract_torch/ and bridge_torch/; no `sys.path` mutation in any of the repository's
Python files (every program runs as `python -m package.module`); `ruff check .` clean with the
rules in ruff.toml.
"""
import ast
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("csae_jax", "extract_torch", "bridge_torch")
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 100
SKIP_DIRS = {".git", ".venv", "venv", "build", "dist", "__pycache__", "node_modules", "runs"}


def _py_files(root: pathlib.Path):
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info"))
    for name in sorted(filenames):
      if name.endswith(".py"):
        yield pathlib.Path(dirpath) / name


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int, int]]:
  """(qualified name, first line, length) of every function or method longer than `limit` lines."""
  out = []

  def visit(node, prefix):
    for child in ast.iter_child_nodes(node):
      if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        name = prefix + child.name
        if not isinstance(child, ast.ClassDef):
          n = child.end_lineno - child.lineno + 1
          if n > limit:
            out.append((name, child.lineno, n))
        visit(child, name + ".")
      else:
        visit(child, prefix)

  visit(ast.parse(source), "")
  return out


def sys_path_edits(source: str) -> list[int]:
  """Lines that call a mutating method of sys.path (insert, append, extend, ...)."""
  lines = []
  for node in ast.walk(ast.parse(source)):
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "path"
        and isinstance(node.func.value.value, ast.Name) and node.func.value.value.id == "sys"
        and node.func.attr in ("insert", "append", "extend", "remove", "pop", "clear")):
      lines.append(node.lineno)
  return lines


def test_the_checkers_find_what_they_look_for():
  body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
  src = f"class A:\n  def big(self):\n{body}\n\ndef small():\n  return 1\n"
  assert long_functions(src) == [("A.big", 2, MAX_FUNCTION_LINES + 1)]
  assert long_functions(src.replace("    x0 = 0\n", "")) == []
  assert sys_path_edits("import sys\nsys.path.insert(0, '.')\nsys.path.append('x')\n") == [2, 3]
  assert sys_path_edits("import sys\nprint(sys.path)\n") == []


@pytest.mark.parametrize("package", PACKAGES)
def test_no_file_over_600_lines(package):
  big = {str(p.relative_to(REPO)): n for p in _py_files(REPO / package)
         if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES}
  assert not big, f"files over {MAX_FILE_LINES} lines (split them by role): {big}"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_function_over_100_lines(package):
  big = {f"{p.relative_to(REPO)}:{line} {name}": n for p in _py_files(REPO / package)
         for name, line, n in long_functions(p.read_text())}
  assert not big, f"functions over {MAX_FUNCTION_LINES} lines (split into named phases): {big}"


def test_no_sys_path_edits_anywhere():
  found = {str(p.relative_to(REPO)): lines for p in _py_files(REPO)
           if (lines := sys_path_edits(p.read_text()))}
  assert not found, ("sys.path edited (run programs as `python -m package.module` from the "
                     f"repository root, or set PYTHONPATH): {found}")


def _ruff() -> list[str]:
  exe = shutil.which("ruff", path=os.path.dirname(sys.executable)) or shutil.which("ruff")
  if exe is None:
    pytest.fail("ruff is not installed: pip install -e '.[dev]' (or pip install ruff)")
  return [exe]


def test_ruff_check_is_clean():
  out = subprocess.run([*_ruff(), "check", "--no-cache", "--output-format=concise", "."],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, f"ruff check (rules in ruff.toml) found:\n{out.stdout[-6000:]}"
