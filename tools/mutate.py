r"""Mutation testing of the core modules: do the tests notice a plausible one-token bug?

  .venv/bin/python -m tools.mutate --sample=20 --seed=0 --jobs=1 --out=/tmp/mutation.json
  .venv/bin/python -m tools.mutate --modules=ops,store --sample=0   # every mutant of two modules
  .venv/bin/python -m tools.mutate --list                             # mutant counts only

For each module (a group of source files, mapped to the test files that should catch its bugs)
this generates mutants by AST: comparison flips (< <=, > >=, == !=), arithmetic swaps (+ -, * /),
integer constants +-1, and/or swaps, a dropped unary minus, True/False swaps. Mutations inside
f-strings (error messages only) are not generated. Each mutant is written into a private copy of
the repository (the working tree is never modified), the mapped tests run with a timeout, and the
mutant counts as killed (tests fail or error), survived (tests pass) or timeout. The report gives
the per-module survival rate and every survivor with its file, line and change.
"""
from __future__ import annotations

import ast
import concurrent.futures
import dataclasses
import json
import os
import queue
import random
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

MODULES = {
    "families": (["csae_jax/families/"], ["tests/families/test_families.py"]),
    "cascade": (["csae_jax/cascade.py"], ["tests/test_cascade.py"]),
    "ops": (["csae_jax/ops.py"], ["tests/test_ops.py"]),
    "conventions": (["csae_jax/conventions.py"], ["tests/test_conventions.py", "tests/test_step.py"]),
    "store": (["csae_jax/store/"], ["tests/test_store.py"]),
    "evaluation": (["csae_jax/evaluation/"], ["tests/evaluation/"]),
    "steering": (["bridge_torch/steering.py"],
                 ["tests/bridge_torch/test_steering_exact.py",
                  "tests/bridge_torch/test_steering_stats.py",
                  "tests/bridge_torch/test_steering_hook.py"]),
}

_MODULES = flags.DEFINE_list("modules", list(MODULES), f"Modules to mutate, of {list(MODULES)}.")
_SAMPLE = flags.DEFINE_integer("sample", 20, "Mutants drawn per module (seeded); 0 = all.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the mutant sample.")
_JOBS = flags.DEFINE_integer("jobs", 1, "Mutants tested in parallel (one repository copy each).")
_TIMEOUT_FACTOR = flags.DEFINE_float("timeout_factor", 3.0,
                                     "Timeout per mutant = factor x the module's clean test time "
                                     "+ 30 s.")
_OUT = flags.DEFINE_string("out", None, "Write the full report (JSON) here.")
_LIST = flags.DEFINE_bool("list", False, "Only count the mutants per module.")
_TESTS = flags.DEFINE_list("tests", None, "Test files to run instead of the modules' mapped tests "
                           "(e.g. the fast subset on a loaded machine).")

_CMP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
        ast.Eq: ast.NotEq, ast.NotEq: ast.Eq}
_BIN = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult}
_SYM = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
        ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.And: "and", ast.Or: "or"}


@dataclasses.dataclass(frozen=True)
class Mutant:
  path: str          # repository-relative source file
  index: int         # which mutation point of that file (in ast.walk order)
  variant: int       # which change at that point (constants have two: +1 and -1)
  line: int
  change: str

  def describe(self) -> str:
    return f"{self.path}:{self.line}: {self.change}"


def _in_fstring(tree: ast.AST) -> set[int]:
  inside = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.JoinedStr):
      inside.update(id(n) for n in ast.walk(node))
  return inside


def _points(tree: ast.AST):
  """(node, variant, change) for every mutation point, in a deterministic order."""
  skip = _in_fstring(tree)
  for node in ast.walk(tree):
    if id(node) in skip:
      continue
    if isinstance(node, ast.Compare):
      for i, op in enumerate(node.ops):
        if type(op) in _CMP:
          yield node, i, f"{_SYM[type(op)]} -> {_SYM[_CMP[type(op)]]}"
    elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in _BIN:
      yield node, 0, f"{_SYM[type(node.op)]} -> {_SYM[_BIN[type(node.op)]]}"
    elif isinstance(node, ast.BoolOp):
      other = "or" if isinstance(node.op, ast.And) else "and"
      yield node, 0, f"{_SYM[type(node.op)]} -> {other}"
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
      yield node, 0, "drop unary -"
    elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
      yield node, 0, f"{node.value} -> {not node.value}"
    elif isinstance(node, ast.Constant) and type(node.value) is int:
      yield node, 0, f"{node.value} -> {node.value + 1}"
      yield node, 1, f"{node.value} -> {node.value - 1}"


def _apply(node, variant):
  """Mutate `node` in place; returns a replacement node when the node itself is replaced."""
  if isinstance(node, ast.Compare):
    node.ops[variant] = _CMP[type(node.ops[variant])]()
  elif isinstance(node, (ast.BinOp, ast.AugAssign)):
    node.op = _BIN[type(node.op)]()
  elif isinstance(node, ast.BoolOp):
    node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
  elif isinstance(node, ast.UnaryOp):
    return node.operand
  elif isinstance(node.value, bool):
    node.value = not node.value
  else:
    node.value = node.value + (1 if variant == 0 else -1)
  return None


def list_mutants(root: str, path: str) -> list[Mutant]:
  tree = ast.parse(open(os.path.join(root, path)).read())
  return [Mutant(path, i, variant, getattr(node, "lineno", 0), change)
          for i, (node, variant, change) in enumerate(_points(tree))]


def mutated_source(root: str, mutant: Mutant) -> str:
  """The file with one mutation applied (ast.walk order is deterministic, so indices match)."""
  tree = ast.parse(open(os.path.join(root, mutant.path)).read())
  target, variant, _ = list(_points(tree))[mutant.index]
  new = _apply(target, variant)
  if new is not None:
    for parent in ast.walk(tree):
      for field, value in ast.iter_fields(parent):
        if value is target:
          setattr(parent, field, new)
        elif isinstance(value, list) and any(v is target for v in value):
          setattr(parent, field, [new if v is target else v for v in value])
  return ast.unparse(ast.fix_missing_locations(tree))


def module_files(root: str, module: str) -> list[str]:
  files = []
  for entry in MODULES[module][0]:
    if entry.endswith("/"):
      files += sorted(os.path.join(entry, f) for f in os.listdir(os.path.join(root, entry))
                      if f.endswith(".py") and f != "__init__.py")
    else:
      files.append(entry)
  return files


def copy_repo(root: str, dest: str) -> str:
  """Tracked and untracked-but-not-ignored files of `root`, copied under dest."""
  names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=root, check=True,
                         capture_output=True, text=True).stdout.split("\n")
  for name in filter(None, names):
    src = os.path.join(root, name)
    if os.path.isfile(src) and not os.path.islink(src):
      os.makedirs(os.path.dirname(os.path.join(dest, name)) or dest, exist_ok=True)
      shutil.copy2(src, os.path.join(dest, name))
  return dest


def run_tests(repo: str, tests: list[str], timeout: float) -> tuple[str, float]:
  env = dict(os.environ, PYTHONPATH=repo, JAX_PLATFORMS="cpu", PYTHONDONTWRITEBYTECODE="1")
  t0 = time.time()
  try:
    r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                       cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return "timeout", time.time() - t0
  return ("survived" if r.returncode == 0 else "killed"), time.time() - t0


def _worker_test(repo: str, mutant: Mutant, tests, timeout):
  target = os.path.join(repo, mutant.path)
  original = open(target).read()
  source = mutated_source(repo, mutant)
  try:
    with open(target, "w") as f:
      f.write(source)
    return run_tests(repo, tests, timeout)
  finally:
    with open(target, "w") as f:
      f.write(original)


def main(argv):
  del argv
  root = os.getcwd()
  unknown = [m for m in _MODULES.value if m not in MODULES]
  if unknown:
    raise app.UsageError(f"unknown modules {unknown}; known: {list(MODULES)}")
  plan = {}
  for module in _MODULES.value:
    mutants = [m for f in module_files(root, module) for m in list_mutants(root, f)]
    rng = random.Random(f"{_SEED.value}:{module}")
    n = len(mutants) if _SAMPLE.value <= 0 else min(_SAMPLE.value, len(mutants))
    plan[module] = (len(mutants), sorted(rng.sample(mutants, n), key=lambda m: (m.path, m.line)))
    print(f"{module}: {len(mutants)} mutants, testing {n}", flush=True)
  if _LIST.value:
    return
  work = tempfile.mkdtemp(prefix="csae-mutate-")
  repos = [copy_repo(root, os.path.join(work, f"repo{i}")) for i in range(max(1, _JOBS.value))]
  report = {"seed": _SEED.value, "sample": _SAMPLE.value, "modules": {}}
  try:
    for module, (total, mutants) in plan.items():
      tests = _TESTS.value or MODULES[module][1]
      status, clean = run_tests(repos[0], tests, 1800)
      print(f"{module}: clean tests {status} in {clean:.0f} s", flush=True)
      if status != "survived":
        print(f"{module}: the clean tests do not pass ({status}); skipped", flush=True)
        report["modules"][module] = {"error": f"clean tests {status}"}
        continue
      timeout = _TIMEOUT_FACTOR.value * clean + 30
      free = queue.Queue()
      for repo in repos:
        free.put(repo)

      def test_one(m, tests=tests, timeout=timeout, free=free):
        repo = free.get()
        try:
          status, secs = _worker_test(repo, m, tests, timeout)
        finally:
          free.put(repo)
        print(f"  {status:8s} {secs:6.1f}s {m.describe()}", flush=True)
        return m, (status, secs)

      with concurrent.futures.ThreadPoolExecutor(len(repos)) as pool:
        results = list(pool.map(test_one, mutants))
      counts = {"killed": 0, "survived": 0, "timeout": 0}
      survivors = []
      for m, (status, _secs) in results:
        counts[status] += 1
        if status == "survived":
          line = open(os.path.join(root, m.path)).read().split("\n")[m.line - 1].strip()
          survivors.append({"mutant": m.describe(), "source": line})
      tested = len(results)
      rate = counts["survived"] / tested if tested else float("nan")
      report["modules"][module] = dict(total_mutants=total, tested=tested, **counts,
                                       survival_rate=rate, clean_test_s=round(clean, 1),
                                       survivors=survivors)
      print(f"{module}: killed {counts['killed']}, survived {counts['survived']}, timeout "
            f"{counts['timeout']} of {tested} ({100 * rate:.1f}% survived; {total} mutants in all)",
            flush=True)
  finally:
    shutil.rmtree(work, ignore_errors=True)
  print("\nmodule        tested  killed  survived  timeout  survival")
  for module, r in report["modules"].items():
    if "error" in r:
      print(f"{module:<13} {r['error']}")
      continue
    print(f"{module:<13} {r['tested']:>6}  {r['killed']:>6}  {r['survived']:>8}  {r['timeout']:>7}  "
          f"{100 * r['survival_rate']:>7.1f}%")
  for module, r in report["modules"].items():
    for s in r.get("survivors", []):
      print(f"SURVIVED [{module}] {s['mutant']}    | {s['source']}")
  if _OUT.value:
    with open(_OUT.value + ".tmp", "w") as f:
      json.dump(report, f, indent=1)
    os.replace(_OUT.value + ".tmp", _OUT.value)


if __name__ == "__main__":
  app.run(main)
