"""The tiny planted experiment config used by the evaluation tests."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_experiment_config():
  path = os.path.join(ROOT, "configs", "experiments_planted.py")
  spec = importlib.util.spec_from_file_location("experiments_planted", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config()
  c.methods = ("batchtopk", "csae")
  c.ablations = ("hac", "full")
  c.data.planted.update(dict(d=16, n_parents=3, children_per_parent=3, n_images=48,
                             tokens_per_image=12, embed_dim=8))
  c.n1, c.n2, c.k1, c.k2 = 16, 4, 2, 1
  c.steps, c.batch_size, c.checkpoint_every = 60, 64, 60
  c.data.scale_batches = 2
  c.csae.cascade.level_start_steps = (10,)
  c.eval.chunk_tokens = 128
  return c
