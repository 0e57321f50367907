"""One tiny experiment (planted data) shared by the runner, API and browser tests."""
import pytest

from tests.evaluation.tiny import tiny_experiment_config


@pytest.fixture(scope="session")
def experiment(tmp_path_factory):
  from csae_jax.evaluation import experiments
  workdir = str(tmp_path_factory.mktemp("experiment"))
  config = tiny_experiment_config()
  out = experiments.run_experiment(config, workdir)
  return {"workdir": workdir, "config": config, "out": out}
