"""Progress line (rate, ETA) and the JSON-lines writer's resume truncation."""
import json
import re

from csae_jax.trainer import metrics


def test_progress_line_has_rate_and_eta(capsys):
  p = metrics.Progress(total=100, start=0, batch_size=32, mode="always")
  p.t0 -= 10.0                                   # as if 10 s had passed
  p.update(20, {"loss": 0.5})
  p.close()
  line = capsys.readouterr().err
  m = re.search(r"step 20/100 (\S+) step/s (\S+) tok/s ETA (\d+):(\d\d):(\d\d) loss 0.5", line)
  assert m, line
  rate = float(m.group(1))
  assert 1.9 < rate < 2.1                        # 20 steps in ~10 s
  eta = int(m.group(3)) * 3600 + int(m.group(4)) * 60 + int(m.group(5))
  assert 38 <= eta <= 41                         # 80 steps left at ~2 step/s


def test_writer_drops_lines_after_the_resumed_step(tmp_path):
  path = tmp_path / "metrics.jsonl"
  rows = [{"step": s, "loss": 1.0 / s} for s in (10, 20, 30)]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 40, "lo')  # cut by a kill
  w = metrics.MetricWriter(path, tmp_path / "tb", resume_step=20)
  w.write(30, {"loss": float("nan"), "fvu": 0.5})
  w.close()
  got = [json.loads(l) for l in path.read_text().splitlines()]
  assert [r["step"] for r in got] == [10, 20, 30]
  assert got[-1]["loss"] == "nan" and got[-1]["fvu"] == 0.5


def test_disk_full_echoes_of_library_writer_tasks_are_dropped_once_reported():
  """Orbax's failed writer tasks reach the log again through asyncio ('Task exception was never
  retrieved'); on a full disk the trainer already said it in one line, so those are dropped."""
  import logging as logging_std

  from csae_jax.trainer import metrics as metrics_lib

  def record(path, msg, level=logging_std.ERROR):
    return logging_std.LogRecord("asyncio", level, path, 1, msg, None, None)

  flt = metrics_lib._LibraryInfoFilter()
  full = ("Task exception was never retrieved\nfuture: <Task exception=ValueError('Failed to "
          "write 4105 bytes to file 15: No space left on device [os_error_code=28]')>")
  assert not flt.filter(record("/usr/lib/python3.11/asyncio/base_events.py", full))
  assert flt.filter(record("/usr/lib/python3.11/asyncio/base_events.py", "some other failure"))
  assert flt.filter(record("/work/csae_jax/trainer/loop.py", full))   # our own lines stay
