"""Row 6 of issue 10: bad training config values and unknown keys are rejected by
cfg_lib.complete / cfg_lib.validate (called by train() before anything is written), naming the key."""
import json

import pytest

from csae_jax.trainer import config as cfg_lib
from csae_jax.trainer import train

from trainer_helpers import load_config

BAD = [
    ("clip_norm", -1.0, "config.clip_norm"),
    ("clip_norm", float("nan"), "config.clip_norm"),
    ("lr", float("inf"), "config.lr"),
    ("lr", -1e-3, "config.lr"),
    ("decay_start_frac", 2.0, "config.decay_start_frac"),
    ("seed", -1, "config.seed"),
    ("steps", 0, "config.steps"),
    ("data.input_scale", float("inf"), "config.data.input_scale"),
    ("data.input_scale", 0.0, "config.data.input_scale"),
    ("data.prefetch", -2, "config.data.prefetch"),
    ("model.cascade.alphas", [-1.0], "alphas"),
    ("model.cascade.alphas", [float("nan")], "alphas"),
    ("overwrite", "yes", "config.overwrite"),
]


def _set(config, dotted, value):
  *parents, last = dotted.split(".")
  node = config
  for p in parents:
    node = node[p]
  with node.ignore_type():
    node[last] = value


@pytest.mark.parametrize("key,value,message", BAD, ids=[f"{k}={v}" for k, v, _ in BAD])
def test_bad_value_rejected_naming_the_key(key, value, message):
  config = cfg_lib.complete(load_config("tiny_csae"))
  _set(config, key, value)
  with pytest.raises(ValueError, match=message.replace(".", r"\.")):
    cfg_lib.validate(config)


@pytest.mark.parametrize("dotted", ["stpes", "data.pth", "mesh.modle", "learning_rate"])
def test_unknown_keys_rejected(dotted):
  plain = cfg_lib.to_plain(load_config("tiny_csae"))
  *parents, last = dotted.split(".")
  node = plain
  for p in parents:
    node = node[p]
  node[last] = 5
  with pytest.raises(ValueError, match=rf"config\.{dotted} is not a training config key"):
    cfg_lib.complete(plain)


def test_typo_suggests_the_key():
  plain = cfg_lib.to_plain(load_config("tiny_csae"))
  plain["stpes"] = 5
  with pytest.raises(ValueError, match=r"did you mean steps\?"):
    cfg_lib.complete(plain)


def test_free_form_subtrees_still_take_their_options():
  plain = cfg_lib.to_plain(load_config("tiny_csae"))
  config = cfg_lib.complete(plain)
  cfg_lib.validate(config)
  assert config.model.name == "cascade"


def test_saved_configs_with_old_keys_still_load():
  text = '{"model": {"name": "relu", "d": 4, "options": {"n": 8}}, "stpes": 3}'
  assert cfg_lib.from_json(text).stpes == 3


def test_train_writes_nothing_for_a_bad_config(tmp_path):
  config = load_config("tiny_csae")
  config.clip_norm = -1.0
  with pytest.raises(ValueError, match="config.clip_norm"):
    train(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()
  config = cfg_lib.to_plain(load_config("tiny_csae"))
  config["stpes"] = 5
  with pytest.raises(ValueError, match="config.stpes"):
    train(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()


def test_a_run_saved_before_a_key_existed_still_matches_its_defaults():
  """A config.json without a key added later (data.shuffle) equals a config at the default."""
  from csae_jax.trainer import config as cfg_lib
  current = cfg_lib.to_plain(cfg_lib.complete(cfg_lib.base_config()))
  saved = json.loads(json.dumps(current))
  del saved["data"]["shuffle"], saved["data"]["window_bytes"]
  assert cfg_lib.differences(saved, current) == []
  saved["data"]["shuffle"] = "window"
  assert cfg_lib.differences(saved, current) == ["data.shuffle: saved 'window', now 'auto'"]
