"""Row 13 / 14 of issue 10: every command-line entry point turns a user error into one line on
stderr and exit status 2; re-running a finished training command exits 0 with one line."""
import subprocess
import sys

import pytest

from csae_jax import cli
from csae_jax import fileio
from csae_jax import locks

from tests.trainer.trainer_helpers import REPO
from tests.trainer.trainer_helpers import subprocess_env


def _run(args, timeout=240):
  return subprocess.run([sys.executable, *args], cwd=REPO, env=subprocess_env(),
                        capture_output=True, text=True, timeout=timeout)


def _one_line_exit_2(out, prog, pattern):
  assert out.returncode == 2, out.stderr[-3000:]
  lines = [l for l in out.stderr.splitlines() if l.startswith(f"{prog}: ")]
  assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
  assert pytest.importorskip("re").search(pattern, lines[0]), lines[0]


def test_user_errors_exit_2_with_one_line(capsys):
  for err in (ValueError("bad\nvalue"), FileNotFoundError("gone"), locks.LockHeldError("held"),
              fileio.DiskFullError(28, "full")):
    with pytest.raises(SystemExit) as e:
      with cli.user_errors_exit("prog"):
        raise err
    assert e.value.code == 2
  lines = capsys.readouterr().err.splitlines()
  assert lines[0] == "prog: ValueError: bad value" and len(lines) == 4
  with pytest.raises(KeyError):             # a bug keeps its traceback
    with cli.user_errors_exit("prog"):
      raise KeyError("x")


def test_cli_user_errors(tmp_path):
  (tmp_path / "x.h5").write_text("not hdf5")
  cases = [
      (["-m", "launch.train", "--config=/nonexistent/cfg.py", f"--workdir={tmp_path}/w"], "train",
       "--config could not be loaded"),
      (["-m", "launch.train", "--config=configs/tiny_relu.py", f"--workdir={tmp_path}/w",
        "--config.lr=-1"], "train", r"config\.lr must be"),
      (["-m", "csae_jax.export", f"--workdir={tmp_path}/none", f"--out={tmp_path}/e"], "export",
       "holds no run"),
      (["-m", "bridge_torch.ae_import", f"--ae_pt={tmp_path}/none.pt", f"--out={tmp_path}/e"],
       "ae_import", "does not exist"),
      (["-m", "launch.extract", f"--import_hdf5={tmp_path}/x.h5", f"--out={tmp_path}/s"], "extract",
       "not a readable HDF5 file"),
  ]
  for args, prog, pattern in cases:
    _one_line_exit_2(_run(args), prog, pattern)
  assert not (tmp_path / "w").exists()


def test_rerunning_a_finished_run_is_nothing_to_do(tmp_path):
  args = ["-m", "launch.train", "--config=configs/tiny_relu.py", f"--workdir={tmp_path}/w",
          "--config.steps=4", "--config.progress=never"]
  from csae_jax import trainer
  from tests.trainer.trainer_helpers import load_config
  config = load_config("tiny_relu")
  config.steps, config.progress = 4, "never"
  trainer.train(config, tmp_path / "w")          # the same run, trained in-process
  again = _run(args)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.strip().splitlines() == ["finished at step 4: nothing to do"]
  changed = _run(args[:-2] + ["--config.steps=8"])
  _one_line_exit_2(changed, "train", "holds a finished run")
