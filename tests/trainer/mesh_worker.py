"""Run in a subprocess with 8 CPU devices by test_mesh_training.py; prints one JSON line.

Trains tiny runs on 1 device and on meshes of 8, and reports parameter / optimizer differences,
per-device optimizer bytes and the per-device shape of the level-2 encoder matmul.
"""
import json
import os
import re
import tempfile

import jax
import jax.numpy as jnp

from trainer_helpers import load_config
from trainer_helpers import max_rel_diff

from csae_jax import trainer
from csae_jax.models import build_model
from csae_jax.trainer import config as cfg_lib
from csae_jax.trainer import loop
from csae_jax.trainer import mesh as mesh_lib

STEPS = 50


def train(name, root, num_devices, model_axis=1, **mesh):
  c = load_config(name)
  c.steps = STEPS
  c.checkpoint_every = STEPS
  c.log_every = STEPS
  c.mesh.num_devices = num_devices
  c.mesh.model = model_axis
  for k, v in mesh.items():
    c.mesh[k] = v
  wd = os.path.join(root, f"{name}_{num_devices}_{model_axis}")
  result = trainer.train(c, wd)
  return result, trainer.load_run(wd, with_opt_state=True)


def level2_dot_rows(split_level2, shard_opt_state):
  """Rows per device of the level-2 dense activation (atoms @ W_enc2) in the compiled step."""
  c = cfg_lib.complete(load_config("tiny_csae"))
  c.model.levels[0]["n"] = 96
  c.model.levels[1]["n"] = 5
  model = build_model(c.model, STEPS)
  opt, sched = loop._make_optimizer(model, c)
  abstract = loop._abstract_state(model, opt, c.model.d)
  layout = mesh_lib.state_layout(mesh_lib.make_mesh(-1, 1), abstract, shard_opt_state)
  step = loop.make_step(model, opt, sched, 1.0, layout, split_level2)
  x = jax.ShapeDtypeStruct((c.batch_size, c.model.d), jnp.float32, sharding=layout.batch)
  hlo = step.lower(loop._with_shardings(abstract, layout.state), x).compile().as_text()
  return sorted({int(m.group(1)) for m in re.finditer(r"f32\[(\d+),5\]\{1,0\} dot\(", hlo)})


def main():
  assert jax.device_count() == 8, jax.devices()
  out = {}
  with tempfile.TemporaryDirectory() as root:
    _, one = train("tiny_relu", root, 1)
    res8, eight = train("tiny_relu", root, 8)
    out["relu_params"] = max_rel_diff(one.params, eight.params)
    out["relu_opt"] = max_rel_diff(one.opt_state, eight.opt_state)
    out["relu_bytes"] = res8.bytes_per_device
    _, c1 = train("tiny_csae", root, 1)
    res42, c42 = train("tiny_csae", root, 8, model_axis=2)
    out["csae_params"] = max_rel_diff(c1.params, c42.params)
    out["csae_state"] = max_rel_diff(c1.model_state, c42.model_state)
    out["csae_bytes"] = res42.bytes_per_device
  out["level2_rows_split"] = level2_dot_rows(True, True)
  out["level2_rows_unsplit"] = level2_dot_rows(False, False)
  print("RESULT " + json.dumps(out))


if __name__ == "__main__":
  main()
