"""The stateless batch rule (csae_jax/trainer/data.py): permutations, epochs, process slices."""
import jax
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from csae_jax.trainer import data


@pytest.mark.parametrize("n", [1, 2, 3, 7, 100, 1000, 4097])
def test_feistel_is_a_permutation(n):
  keys = np.random.SeedSequence(n).generate_state(4, np.uint64)
  perm = data.FeistelPermutation(n, keys)(np.arange(n, dtype=np.uint64))
  assert sorted(perm.tolist()) == list(range(n))


def test_each_epoch_visits_every_token_once_in_a_new_order():
  rule = data.BatchRule(num_tokens=96, batch_size=32, seed=3)
  epoch0 = np.concatenate([rule.indices(s) for s in range(3)])
  epoch1 = np.concatenate([rule.indices(s) for s in range(3, 6)])
  assert sorted(epoch0.tolist()) == list(range(96))
  assert sorted(epoch1.tolist()) == list(range(96))
  assert not np.array_equal(epoch0, epoch1)
  assert not np.array_equal(epoch0, np.arange(96))   # shuffled


def test_batches_straddle_epochs_and_are_pure_functions_of_seed_and_step():
  rule = data.BatchRule(num_tokens=50, batch_size=32, seed=1)
  stream = np.concatenate([rule.indices(s) for s in range(5)])   # 160 = 3 epochs + 10
  for e in range(3):
    assert sorted(stream[50 * e:50 * (e + 1)].tolist()) == list(range(50))
  fresh = data.BatchRule(num_tokens=50, batch_size=32, seed=1)
  np.testing.assert_array_equal(fresh.indices(4), rule.indices(4))   # no hidden state
  other = data.BatchRule(num_tokens=50, batch_size=32, seed=2)
  assert not np.array_equal(other.indices(0), rule.indices(0))


def test_rows_are_roughly_uniform_over_positions():
  # Chi-square over 10 position bins of the first batch of many seeds: a shuffle, not a stride.
  n, b = 1000, 100
  counts = np.zeros(10)
  for seed in range(200):
    counts += np.bincount(data.BatchRule(n, b, seed).indices(0) // 100, minlength=10)
  expected = 200 * b / 10
  chi2 = float(((counts - expected) ** 2 / expected).sum())
  assert chi2 < 30.0   # 9 dof: p ~ 4e-4


def test_local_row_slices_cover_the_batch_once():
  devs = np.asarray(jax.devices()[:1]).reshape(1, 1)
  sharding = NamedSharding(Mesh(devs, ("data", "model")), P("data", None))
  assert data.local_row_slices(sharding, (64, 8)) == [(0, 64)]


def test_estimate_scale_matches_numpy():
  rng = np.random.default_rng(0)
  tokens = rng.normal(size=(500, 6)).astype(np.float32) * 3.0
  src = data.ArraySource(tokens, "test")
  s = data.estimate_scale(src, rule_seed=0, batch_size=100, batches=5, max_tokens=10_000)
  assert s == pytest.approx(np.sqrt((tokens.astype(np.float64) ** 2).sum(1).mean()), rel=1e-9)


class _HalfOfTheBatch:
  """Stands in for a 2-process batch sharding seen from process 1 (devices 2 and 3 of 4)."""

  def addressable_devices_indices_map(self, shape):
    quarter = shape[0] // 4
    return {2: (slice(2 * quarter, 3 * quarter), slice(None)),
            3: (slice(3 * quarter, None), slice(None))}


def test_a_process_reads_only_the_rows_of_its_devices():
  assert data.local_row_slices(_HalfOfTheBatch(), (64, 8)) == [(32, 48), (48, 64)]
  tokens = np.arange(100 * 3, dtype=np.float32).reshape(100, 3)
  read = []

  class Recording(data.ArraySource):
    def read_rows(self, indices):
      read.append(np.asarray(indices))
      return super().read_rows(indices)

  rule = data.BatchRule(100, 64, seed=0)
  batches = data.Batches(Recording(tokens, "t"), rule, _HalfOfTheBatch(), start=0, stop=0)
  batches.close()                                  # no steps to prefetch; read one by hand
  parts = batches.read_local(7)
  idx = rule.indices(7)
  assert sorted(parts) == [(32, 48), (48, 64)]
  assert sum(len(r) for r in read) == 32           # half the batch, nothing else
  np.testing.assert_array_equal(np.concatenate(read), idx[32:])
  np.testing.assert_array_equal(parts[(48, 64)], tokens[idx[48:]])
