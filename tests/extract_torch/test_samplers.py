"""The paper's samplers (SPEC section 6) and shard ranges."""
import numpy as np
import pytest

from extract_torch import samplers


def test_per_class_counts_seeded_and_disjoint_second_draw():
  labels = np.repeat(np.arange(10), [7, 3, 12, 9, 5, 8, 6, 11, 4, 10])
  a = samplers.sample(labels, "per_class", seed=1, per_class=5)
  assert np.all(np.diff(a) > 0)                                   # sorted, no repeats
  counts = np.bincount(labels[a], minlength=10)
  assert counts.tolist() == [5, 3, 5, 5, 5, 5, 5, 5, 4, 5]        # small classes keep all
  np.testing.assert_array_equal(a, samplers.sample(labels, "per_class", seed=1, per_class=5))
  assert not np.array_equal(a, samplers.sample(labels, "per_class", seed=2, per_class=5))
  b = samplers.sample(labels, "per_class", seed=1, per_class=5, offset=5)   # test draw
  assert not set(a) & set(b)
  with pytest.raises(ValueError, match="class 1 has 3 images; 5 needed"):
    samplers.sample_per_class(labels, 5, seed=1, strict=True)


def test_fraction_split_partitions():
  labels = np.zeros(1000, np.int64)                               # Color: 1000 images, 8:2
  tr = samplers.sample(labels, **samplers.paper_split("color", "train"), seed=0)
  te = samplers.sample(labels, **samplers.paper_split("color", "test"), seed=0)
  assert len(tr) == 800 and len(te) == 200
  assert sorted(set(tr) | set(te)) == list(range(1000)) and not set(tr) & set(te)


def test_paper_settings():
  assert samplers.paper_split("imagenet", "train") == {"sampler": "per_class", "per_class": 50}
  assert samplers.paper_split("imagenet", "test") == {"sampler": "all"}
  assert samplers.paper_split("inaturalist", "test")["per_class"] == 5
  assert samplers.paper_split("coco", "train")["per_class"] == 250
  with pytest.raises(ValueError, match="no paper sampling"):
    samplers.paper_split("mnist", "train")


@pytest.mark.parametrize("n,batch,shards", [(9, 2, 2), (100, 8, 3), (5, 8, 4), (64, 8, 8)])
def test_shards_are_disjoint_whole_batches_covering_all(n, batch, shards):
  ranges = [samplers.shard_range(n, batch, k, shards) for k in range(shards)]
  assert ranges[0][0] == 0 and ranges[-1][1] == n
  for (lo, hi), (lo2, _) in zip(ranges, ranges[1:]):
    assert hi == lo2 and lo % batch == 0 and lo <= hi
  with pytest.raises(ValueError, match="shard_index"):
    samplers.shard_range(n, batch, shards, shards)
