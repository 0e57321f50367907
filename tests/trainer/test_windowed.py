"""Chunk-window shuffle (csae_jax/trainer/windowed.py): a permutation per epoch, pure in
(seed, step), at most two windows per batch, rows equal to the store's, read-ahead exact."""
import numpy as np
import pytest

from csae_jax import store as store_lib
from csae_jax.trainer import data as data_lib
from csae_jax.trainer import windowed


@pytest.mark.parametrize("n,b,c,w", [(1000, 64, 100, 3), (1000, 37, 128, 2), (257, 16, 32, 1),
                                     (4096, 256, 256, 16), (50, 7, 64, 4)])
def test_every_epoch_is_a_permutation_in_a_fresh_order(n, b, c, w):
  rule = windowed.WindowRule(n, b, seed=3, chunk_tokens=c, window_chunks=w)
  steps = -(-2 * n // b) + 1
  stream = np.concatenate([rule.indices(s) for s in range(steps)])
  e0, e1 = stream[:n], stream[n:2 * n]
  np.testing.assert_array_equal(np.sort(e0), np.arange(n))
  np.testing.assert_array_equal(np.sort(e1), np.arange(n))
  if n > 64:
    assert not np.array_equal(e0, e1)


def test_pure_function_of_seed_and_step():
  a = windowed.WindowRule(3000, 128, seed=7, chunk_tokens=100, window_chunks=4)
  b = windowed.WindowRule(3000, 128, seed=7, chunk_tokens=100, window_chunks=4)
  for s in (40, 3, 0, 17, 40):      # any order, any instance
    np.testing.assert_array_equal(a.indices(s), b.indices(s))
  other = windowed.WindowRule(3000, 128, seed=8, chunk_tokens=100, window_chunks=4)
  assert not np.array_equal(a.indices(0), other.indices(0))


def test_batches_stay_inside_at_most_two_windows_of_chunks():
  n, b, c, w = 10_000, 200, 100, 5
  rule = windowed.WindowRule(n, b, seed=1, chunk_tokens=c, window_chunks=w)
  for s in range(0, 120):
    idx = rule.indices(s)
    windows = rule.windows_of(s)
    assert 1 <= len(windows) <= 2
    allowed = np.concatenate([rule.window_chunk_ids(e, win) for e, win in windows])
    assert set(np.unique(idx // c)) <= set(allowed.tolist())
    assert len(np.unique(idx // c)) <= 2 * w


def test_window_is_a_consecutive_run_of_the_stream():
  """Positions of one window are exactly the rows of that window's chunks (hand check)."""
  n, c, w = 600, 50, 3          # 12 chunks, 4 windows of 150 rows
  rule = windowed.WindowRule(n, 150, seed=0, chunk_tokens=c, window_chunks=w)
  for s in range(4):
    idx = rule.indices(s)
    chunks = rule.window_chunk_ids(0, s)
    expected = np.concatenate([np.arange(k * c, (k + 1) * c) for k in chunks])
    np.testing.assert_array_equal(np.sort(idx), np.sort(expected))


def test_bad_arguments():
  with pytest.raises(ValueError, match="window_chunks"):
    windowed.WindowRule(10, 2, 0, 5, 0)


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
  rng = np.random.default_rng(0)
  toks = rng.normal(size=(1000, 8)).astype(np.float32)
  path = str(tmp_path_factory.mktemp("win") / "store")
  store_lib.write_store(path, toks, np.arange(0, 1001, 10), chunk_tokens=64, split="train",
                        model="planted")
  return path, toks


@pytest.mark.parametrize("read_ahead", [True, False])
def test_windowed_source_reads_the_stores_rows(small_store, read_ahead):
  path, toks = small_store
  store = store_lib.ActivationStore.open(path)
  src = windowed.WindowedStoreSource(store, 3, "test", read_ahead=read_ahead)
  rule = src.make_rule(96, seed=5)
  for s in range(21):                      # two epochs (21 x 96 >= 2 x 1000 tokens)
    idx = rule.indices(s)
    np.testing.assert_array_equal(src.read_rows(idx), toks[idx])
    src.after_step(s)
  if src._ahead is not None:
    src._ahead.join()
  # each chunk read about once per epoch (+ the one window read ahead at the end)
  assert src.chunks_read <= 2 * store.num_chunks + 2 * src.window_chunks
  np.testing.assert_array_equal(src.read_rows(np.array([999, 0, 500])), toks[[999, 0, 500]])


def test_open_source_picks_windows_beyond_the_host_cache(small_store):
  import ml_collections
  path, _ = small_store
  cfg = ml_collections.ConfigDict(dict(kind="store", path=path, split="", verify=False,
                                       host_cache_bytes=1 << 30, shuffle="auto",
                                       window_bytes=64 * 8 * 4 * 2))
  assert data_lib.shuffle_kind(data_lib.open_source(cfg, 8)) == "global"
  cfg.host_cache_bytes = 100
  src = data_lib.open_source(cfg, 8)
  assert data_lib.shuffle_kind(src) == "window:2x64"
  assert isinstance(data_lib.make_rule(src, 32, 0), windowed.WindowRule)
  cfg.shuffle = "sideways"
  with pytest.raises(ValueError, match="shuffle"):
    data_lib.open_source(cfg, 8)


# ----------------------------------------------------------------------------- in the trainer
def _window_config(path, **data):
  from trainer_helpers import load_config
  c = load_config("tiny_relu")
  c.steps, c.checkpoint_every, c.keep = 8, 4, 10
  c.data.kind, c.data.path, c.data.verify = "store", path, False
  c.data.shuffle, c.data.window_bytes = "window", 64 * 8 * 4 * 2   # two chunks a window
  for k, v in data.items():
    c.data[k] = v
  return c


def test_window_shuffle_training_resumes_bitwise_and_refuses_a_changed_shuffle(small_store,
                                                                                tmp_path):
  import shutil

  from csae_jax import trainer
  from trainer_helpers import leaves
  path, _ = small_store
  cfg = _window_config(path)
  cfg.model.d = 8
  trainer.train(cfg, tmp_path / "a")
  final = trainer.load_run(tmp_path / "a", with_opt_state=True)
  copy = tmp_path / "b"
  shutil.copytree(tmp_path / "a", copy)
  shutil.rmtree(copy / "checkpoints" / "8")
  (copy / "run.json").unlink()
  assert trainer.train(cfg, copy).step == 8                 # resumed from step 4
  again = trainer.load_run(copy, with_opt_state=True)
  for x, y in zip(leaves((final.params, final.opt_state)), leaves((again.params, again.opt_state))):
    np.testing.assert_array_equal(x, y)
  # the window order is really used: the global order gives other parameters
  glob = _window_config(path, shuffle="global")
  glob.model.d = 8
  trainer.train(glob, tmp_path / "g")
  g = trainer.load_run(tmp_path / "g")
  assert any(not np.array_equal(x, y) for x, y in zip(leaves(final.params), leaves(g.params)))
  # with shuffle=auto, a changed host_cache_bytes (a runtime key) would switch the rule: refused
  auto = _window_config(path, shuffle="auto", host_cache_bytes=0)
  auto.model.d = 8
  trainer.train(auto, tmp_path / "c")
  shutil.rmtree(tmp_path / "c" / "checkpoints" / "8")
  (tmp_path / "c" / "run.json").unlink()
  auto.data.host_cache_bytes = 1 << 30
  with pytest.raises(ValueError, match="batches were drawn with shuffle 'window:2x64'"):
    trainer.train(auto, tmp_path / "c")
