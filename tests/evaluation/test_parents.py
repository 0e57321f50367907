"""Co-activation parents and post-hoc clustering (SPEC 4 Parents, SPEC 3 post-hoc ablations)."""
import numpy as np
from sklearn.metrics import adjusted_rand_score

from csae_jax.evaluation import parents


def test_coactivation_argmax_ties_to_lowest_and_no_parent():
  c = np.array([[0, 2, 2],      # tie between 1 and 2 -> 1
                [0, 0, 0],      # never co-active -> -1
                [1, 3, 0],
                [4, 0, 4]])     # tie 0/2 -> 0
  np.testing.assert_array_equal(parents.coactivation_parents(c), [1, -1, 1, 0])


def _groups(seed=0, n_groups=3, per=6, d=10):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(n_groups, d)) * 3
  atoms = np.concatenate([c + 0.1 * rng.normal(size=(per, d)) for c in centres])
  return atoms, np.repeat(np.arange(n_groups), per)


def test_hac_and_spectral_recover_separated_groups():
  atoms, truth = _groups()
  for method in ("hac", "spectral"):
    labels = parents.cluster_atoms(atoms, 3, method, n_neighbors=5)
    assert adjusted_rand_score(truth, labels) == 1.0, method
  lab = parents.cluster_atoms(atoms, 3, "hac", linkage="average")
  assert adjusted_rand_score(truth, lab) == 1.0


def test_clustering_respects_keep_mask_and_cluster_cap():
  atoms, truth = _groups()
  keep = np.ones(len(atoms), bool)
  keep[[0, 7]] = False
  labels = parents.cluster_atoms(atoms, 3, "hac", keep=keep)
  assert labels[0] == -1 and labels[7] == -1
  assert adjusted_rand_score(truth[keep], labels[keep]) == 1.0
  few = parents.cluster_atoms(atoms[:2], 5, "hac")       # fewer atoms than clusters
  assert set(few.tolist()) == {0}
  assert (parents.cluster_atoms(atoms, 3, "hac", keep=np.zeros(len(atoms), bool)) == -1).all()


def test_coactivation_counts_hand_case():
  """Tokens are their own Level-1 activations; Level 2 = x @ M. Counts by hand below."""
  import jax.numpy as jnp

  from csae_jax.evaluation import codes
  from csae_jax.evaluation.sources import ArraySource
  from csae_jax.evaluation.subjects import Subject

  m = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
  x = np.array([[0.5, 0.2, 0.0],      # L1 {0, 1}; L2 scores (.5, .2) -> r = 0
                [0.0, 0.9, 0.3],      # L1 {1, 2}; L2 (0, .9)          -> r = 1
                [0.0, 0.0, 0.7],      # L1 {2};    L2 (0, 0): no Level-2 unit -> no count
                [0.4, 0.0005, 0.0]])  # L1 {0} (0.0005 <= 1e-3 is not active); r = 0
  subj = Subject("pair", 3, 2, 3, lambda x, valid: (x, x, x), lambda x, c: x @ jnp.asarray(m),
                 np.eye(3), np.eye(2, 3))
  src = ArraySource(x.astype(np.float32), np.array([0, 2, 4]), embeddings=np.ones((2, 2)))
  res = codes.run_pass(subj, src, codes.PassOptions(chunk_tokens=3))
  np.testing.assert_array_equal(res.coact, [[2, 0], [1, 1], [0, 1]])
  np.testing.assert_array_equal(res.alive, [True, True, True])
  np.testing.assert_array_equal(parents.coactivation_parents(res.coact), [0, 0, 1])  # tie -> 0
  np.testing.assert_allclose(res.image_codes, [[0.25, 0.55, 0.15], [0.2, 0.00025, 0.35]],
                             rtol=1e-6)


def test_clustering_uses_unit_normalised_atoms():
  """Atoms in three direction groups with norms from 0.05 to 20: clustered by direction, exactly
  as scikit-learn clusters the unit-normalised atoms (raw norms would split them by length)."""
  from sklearn import cluster as skc
  atoms, truth = _groups(seed=1, d=6)
  scale = np.random.default_rng(2).uniform(0.05, 20.0, len(atoms))[:, None]
  raw = atoms * scale
  unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
  labels = parents.cluster_atoms(raw, 3, "hac")
  np.testing.assert_array_equal(labels, skc.AgglomerativeClustering(n_clusters=3).fit_predict(unit))
  assert adjusted_rand_score(truth, labels) == 1.0
  assert adjusted_rand_score(truth, skc.AgglomerativeClustering(n_clusters=3).fit_predict(raw)) < 1
  spec = parents.cluster_atoms(raw, 3, "spectral", n_neighbors=5, seed=0)
  assert adjusted_rand_score(truth, spec) == 1.0
