"""Every trainer config file builds a valid model, documents its run command, and its list-valued
settings are tuples that the absl command line can override."""
import importlib.util

import pytest

from csae_jax.models import build_model
from csae_jax.trainer import config as cfg_lib

from trainer_helpers import REPO

FAMILIES = ["relu", "topk", "batchtopk", "jumprelu", "gated", "pannealing"]
FILES = ["baseline", "matryoshka", "stacked", "csae_release", "tiny_relu", "tiny_csae"]


def _module(name):
  spec = importlib.util.spec_from_file_location(f"cfg_{name}", REPO / "configs" / f"{name}.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def _no_lists(tree, path="config"):
  """Lists cannot be overridden from the command line (ml_collections); tuples can."""
  if isinstance(tree, list):
    raise AssertionError(f"{path} is a list; use a tuple so --{path}=... works")
  items = tree.items() if hasattr(tree, "items") else enumerate(tree) \
      if isinstance(tree, tuple) else ()
  for k, v in items:
    _no_lists(v, f"{path}.{k}")


@pytest.mark.parametrize("name", FILES)
def test_config_builds_and_documents_its_command(name):
  mod = _module(name)
  assert "python -m launch.train --config=configs/" + name in mod.__doc__
  assert "Expected" in mod.__doc__
  raw = mod.get_config()
  _no_lists(raw)
  config = cfg_lib.complete(raw)
  if config.data.kind == "store":
    config.data.path = "stores/example"     # the one key a paper config leaves to the user
  cfg_lib.validate(config)
  model = build_model(config.model, config.steps)
  assert model.d == config.model.d


@pytest.mark.parametrize("name", ["planted_csae", "experiments_store", "experiments_planted",
                                  "tutorial_train", "tutorial_experiments", "tutorial_steer",
                                  "steer_qwen3vl", "steer_gemma3", "steer_llava"])
def test_every_other_config_has_tuples_not_lists(name):
  _no_lists(_module(name).get_config())


@pytest.mark.parametrize("family", FAMILIES)
def test_baselines_at_both_paper_sizes(family):
  mod = _module("baseline")
  l1, l2 = (build_model(mod.get_config(f"{family},{s}").model, 1000) for s in ("l1", "l2"))
  assert (l1.name, l1.n, l2.n, l1.d) == (family, 20_000, 10_000, 1024)
  if family in ("topk", "batchtopk"):
    assert (l1.cfg.k, l2.cfg.k) == (6, 1)
    assert l1.cfg.aux_k == 512
  with pytest.raises(ValueError, match="size must be"):
    mod.get_config(f"{family},l3")
  assert build_model(mod.get_config(family).model, 1000).n == 20_000   # size defaults to l1


def test_baseline_names_the_families_on_a_bad_argument():
  with pytest.raises(ValueError, match="no paper baseline for family 'csae'.*batchtopk"):
    _module("baseline").get_config("csae,l1")


def test_paper_constants_live_in_configs_common():
  from configs import common
  assert common.PAPER_N == {"l1": 20_000, "l2": 10_000} and common.PAPER_K == {"l1": 6, "l2": 1}
  assert common.PAPER_TOKENS == 500_000_000 and common.PAPER_BATCH == 1024
  assert not hasattr(cfg_lib, "PAPER_N") and not hasattr(cfg_lib, "paper_baseline")


def test_release_csae_setting():
  config = _module("csae_release").get_config()
  model = build_model(config.model, config.steps)
  l1, l2 = model.cfg.levels
  assert (l1.family, l1.cfg.n, l1.cfg.k, l1.cfg.aux_k) == ("batchtopk", 20_000, 6, None)
  assert (l2.family, l2.cfg.n, l2.cfg.k, l2.cfg.aux_k) == ("batchtopk", 10_000, 1, None)
  assert model.cfg.level_start_steps == (10_000,) and model.cfg.stop_gradient == "full"
  assert l1.cfg.k_anneal_steps == int(0.1 * config.steps)
  assert config.lr == 1e-4 and config.batch_size == 1024
  assert model.cfg.empty_live == "all"            # the release's choice (the paper: skip)
  assert config.batch_size * config.steps == pytest.approx(500e6, rel=1e-3)
  with pytest.raises(ValueError, match="needs config.data.path"):
    cfg_lib.validate(cfg_lib.complete(config))


def test_planted_configs_choose_the_level2():
  from configs import benchmark_hierarchy, experiments_planted
  assert experiments_planted.get_config().csae.level2.family == "vq"
  assert experiments_planted.get_config().csae.cascade.reseed_every == 250
  paper = benchmark_hierarchy.get_config("paper").experiment.csae
  assert "family" not in paper.level2 and "reseed_every" not in paper.cascade
  with pytest.raises(ValueError, match="must be one of"):
    experiments_planted.get_config("kmeans")
