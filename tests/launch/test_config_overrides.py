"""List-valued settings are tuples, so the absl command line overrides them (issue 11 item 2):
parsed here by ml_collections' config flag exactly as launch.train / launch.experiments do."""
import pytest
from absl import flags
from ml_collections import config_flags

from csae_jax.models import build_model
from csae_jax.trainer import config as cfg_lib

REPO_CONFIGS = "configs"


def parse(config_file: str, *overrides: str, lock: bool = False):
  """A fresh FlagValues parsing argv like app.run does (the override flags are found in argv)."""
  argv = ["prog", f"--config={config_file}", *overrides]
  fv = flags.FlagValues()
  holder = config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=lock,
                                           sys_argv=argv)
  fv(argv)
  return holder.value


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
  import pathlib
  monkeypatch.chdir(pathlib.Path(__file__).resolve().parents[2])


def test_train_cascade_lists_from_the_command_line():
  c = parse("configs/tiny_csae.py", "--config.model.cascade.alphas=(0.1,)",
            "--config.model.cascade.level_start_steps=(7,)", "--config.steps=30")
  model = build_model(cfg_lib.complete(c).model, c.steps)
  assert model.cfg.alphas == (0.1,) and model.cfg.level_start_steps == (7,)
  assert model.cfg.levels[0].cfg.k_anneal_steps == 3          # 0.1 x the overridden steps


def test_train_levels_from_the_command_line():
  c = parse("configs/tiny_csae.py",
            '--config.model.levels=({"family":"topk","n":20,"k":2},'
            '{"family":"batchtopk","n":5,"k":1,"aux_k":None})')
  model = build_model(cfg_lib.complete(c).model, c.steps)
  assert [(lv.family, lv.cfg.n, lv.cfg.k) for lv in model.cfg.levels] == [
      ("topk", 20, 2), ("batchtopk", 5, 1)]


def test_baseline_argument_and_overrides():
  c = parse("configs/baseline.py:relu,l2", "--config.model.options.n=333",
            "--config.data.path=/data/store")
  model = build_model(cfg_lib.complete(c).model, c.steps)
  assert (model.name, model.n) == ("relu", 333) and c.data.path == "/data/store"


def test_experiments_lists_and_training_keys_from_the_command_line():
  from csae_jax.evaluation import experiments
  c = parse("configs/experiments_planted.py", "--config.csae.cascade.alphas=(0.1,)",
            "--config.csae.cascade.level_start_steps=(25,)", "--config.methods=csae,relu",
            "--config.ablations=()", "--config.steps=77", "--config.batch_size=32", lock=True)
  experiments.validate(c)
  assert experiments._split(c.methods) == ["csae", "relu"] and experiments._split(c.ablations) == []
  models = experiments.run_models(c, 32)
  assert set(models) == {"csae_full", "relu_l1", "relu_l2"}
  casc = build_model(models["csae_full"], c.steps).cfg
  assert casc.alphas == (0.1,) and casc.level_start_steps == (25,)
  tc = experiments.train_config(c, models["csae_full"], "/tmp/store")
  assert (tc.steps, tc.batch_size) == (77, 32)
  with pytest.raises((AttributeError, KeyError)):      # the old nested schema is gone
    parse("configs/experiments_planted.py", "--config.train.steps=5", lock=True)


def test_tuple_form_of_methods_on_the_command_line():
  c = parse("configs/experiments_planted.py", '--config.methods=("csae","batchtopk")', lock=True)
  assert tuple(c.methods) == ("csae", "batchtopk")


def test_steer_takes_workdir_like_train():
  import launch.steer as steer
  assert flags.FLAGS["workdir"].name == "workdir"       # defined by launch.steer
  with pytest.raises(ValueError, match="--workdir"):
    steer.resolve_export(parse("configs/tutorial_steer.py"), "/tmp/none", "")


def test_a_config_argument_picks_the_papers_level2():
  c = parse("configs/benchmark_hierarchy.py:paper", "--config.steps=10", lock=True)
  assert c.steps == 10 and c.experiment.csae.level2.to_dict() == dict(aux_k=None,
                                                                        threshold_start=50)
  assert parse("configs/benchmark_hierarchy.py").experiment.csae.level2.family == "vq"
