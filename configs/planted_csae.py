r"""Two-level CSAE on a planted concept hierarchy: the first main job (SPEC sections 1-3).

8 planted parents x 4 children in d=64; tokens are sparse mixtures of children. Level 1 (BatchTopK,
n1=64, k1=3) should find the children, Level 2 (BatchTopK, n2=8, k2=1) should group them by parent.

Run (about a minute on 2 CPU cores):
  .venv/bin/python -m launch.planted --config=configs/planted_csae.py --workdir=runs/planted

Expected (seed 0, 3000 steps): Level-1 FVU about 0.03, every planted child recovered (best cosine
about 0.99), parent_match about 0.8-0.9 against a chance level of 0.125 (1 / n_parents).

Coupling "ratio" (docs/hierarchy_quality.md): alpha = 0.1 is the target ratio of the Level-2 to
the Level-1 gradient norm on the Level-1 decoder, whatever n1, batch or live count. The release's
raw alpha = 1 lets Level 2 pull Level-1 atoms onto the parents (--config.model.cascade.coupling=raw).
"""
import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.steps = 3000
  c.batch_size = 1024
  c.lr = ml_collections.config_dict.placeholder(float)   # None: SPEC default 2e-4 / sqrt(n / 2^14)
  c.warmup_steps = 100
  c.log_every = 250
  c.overwrite = False

  c.data = ml_collections.ConfigDict()
  c.data.kind = "planted"
  c.data.planted = ml_collections.ConfigDict(dict(
      d=64, n_parents=8, children_per_parent=4, ortho_scale=0.9, n_images=400,
      tokens_per_image=64, active_per_token=3, in_family_prob=0.85, noise=0.05, seed=0))

  c.model = ml_collections.ConfigDict()
  c.model.name = "cascade"
  c.model.d = 64
  c.model.levels = (
      dict(family="batchtopk", n=64, k=3, aux_k=None, dead_tokens=100_000),
      dict(family="batchtopk", n=8, k=1, aux_k=None, dead_tokens=100_000),
  )
  c.model.cascade = ml_collections.ConfigDict(dict(
      alphas=(0.1,), coupling="ratio", level_start_steps=(500,), stop_gradient="full",
      empty_live="skip", k_anneal_frac=0.1))
  return c
