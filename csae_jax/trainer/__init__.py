"""Sharded, checkpointing trainer (issue 3): `train(config, workdir)` and `load_run(workdir)`.

  from csae_jax import trainer
  result = trainer.train(config, "/tmp/run")      # resumes automatically from /tmp/run
  run = trainer.load_run("/tmp/run")              # .model .params .model_state .input_scale
"""
from csae_jax.trainer.config import base_config
from csae_jax.trainer.loop import Run
from csae_jax.trainer.loop import RunFinishedError
from csae_jax.trainer.loop import TrainingDiverged
from csae_jax.trainer.loop import TrainResult
from csae_jax.trainer.loop import load_run
from csae_jax.trainer.loop import train

__all__ = ["Run", "RunFinishedError", "TrainResult", "TrainingDiverged", "base_config",
           "load_run", "train"]
