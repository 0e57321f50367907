"""Bad input at the evaluation boundary: wrong dimension, no embeddings, empty split."""
import os

import jax
import numpy as np
import pytest

from csae_jax import api
from csae_jax import store as store_lib
from csae_jax.evaluation import evaluator
from csae_jax.evaluation import sources
from csae_jax.evaluation import subjects
from csae_jax.models import build_model


def _subject(d=6):
  m = build_model({"name": "relu", "d": d, "options": {"n": 8}})
  p, s = m.init(jax.random.PRNGKey(0), np.ones((4, d), np.float32))
  return subjects.from_model(m, p, s)


def _source(d=6, n_img=3, emb=True):
  rng = np.random.default_rng(0)
  return sources.ArraySource(rng.normal(size=(4 * n_img, d)), np.arange(0, 4 * n_img + 1, 4),
                             embeddings=rng.normal(size=(n_img, 3)) if emb else None)


def test_dimension_mismatch_names_both_dimensions():
  with pytest.raises(ValueError, match="d=5 but the checkpoint expects d=6"):
    evaluator.evaluate(_subject(6), _source(5), evaluator.Options(posthoc="hac"))


def test_store_without_embeddings_names_the_extraction_flag(tmp_path):
  rng = np.random.default_rng(0)
  path = store_lib.write_store(str(tmp_path / "noemb"), rng.normal(size=(12, 6)).astype(np.float32),
                               np.arange(0, 13, 4))
  store = sources.open_store(path)
  with pytest.raises(ValueError, match="--embedding_backbone"):
    evaluator.evaluate(_subject(), store, evaluator.Options(posthoc="hac"))
  with pytest.raises(ValueError, match="--embedding_backbone"):
    sources.check_source(_source(emb=False))


def test_empty_split_is_refused():
  empty = sources.ArraySource(np.zeros((0, 6)), np.array([0]), embeddings=np.zeros((0, 3)))
  with pytest.raises(ValueError, match="empty split"):
    evaluator.evaluate(_subject(), empty, evaluator.Options(posthoc="hac"))
  planted_like = _source()
  none = planted_like.subset_images(np.array([], np.int64), "test")
  with pytest.raises(ValueError, match="empty split"):
    sources.check_source(none)


def test_nan_tokens_and_bad_options_are_refused():
  src = _source()
  src.tokens[5, 2] = np.nan
  with pytest.raises(ValueError, match="NaN/Inf \\(token 5, column 2\\)"):
    evaluator.evaluate(_subject(), src, evaluator.Options(posthoc="hac"))
  with pytest.raises(ValueError, match="children must be one of"):
    evaluator.Options(children="some").validate()
  with pytest.raises(ValueError, match="no Level 2"):
    evaluator.evaluate(_subject(), _source())
  with pytest.raises(ValueError, match="encoding must be one of"):
    m = build_model({"name": "relu", "d": 6, "options": {"n": 8}})
    subjects.from_model(m, {}, {}, encoding="dense")


def test_checkpoint_and_store_of_different_dimensions(experiment, tmp_path):
  rng = np.random.default_rng(0)
  d_run = experiment["config"].data.planted.d
  path = store_lib.write_store(str(tmp_path / "wide"),
                               rng.normal(size=(12, d_run + 3)).astype(np.float32),
                               np.arange(0, 13, 4), embeddings=rng.normal(size=(3, 4)))
  run_dir = os.path.join(experiment["workdir"], "runs", "csae_full")
  with pytest.raises(ValueError, match=f"d={d_run + 3} but the checkpoint expects d={d_run}"):
    api.load(run_dir, eval_store=path)
