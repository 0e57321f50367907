"""The tutorial's experiment grid (README, "Tutorial"): BatchTopK and CSAE on the tutorial's
store, evaluated with HMS on the same store, tables, plots and the concept browser.

  python -m launch.experiments --config=configs/tutorial_experiments.py \
      --config.data.path=/tmp/csae_tutorial/store --workdir=/tmp/csae_tutorial/exp

Every list is a tuple: --config.methods='("csae","relu")' (or csae,relu),
--config.csae.cascade.alphas='(0.1,)'. Training keys are those of a training config
(--config.steps=400). Expected (seed 0, about 30 s on 2 CPU cores): two methods evaluated, tables
in <workdir>/tables, the browser at <workdir>/browser/index.html; with 24 random-model images
the HMS values are not meaningful, only the pipeline is.
"""
import ml_collections

from configs import experiments_store


def get_config():
  c = experiments_store.get_config()
  c.methods = ("batchtopk", "csae")
  c.ablations = ()
  c.data.kind = "store"
  c.data.path = ""                       # --config.data.path=<the tutorial's store>
  c.data.eval_path = ""                  # the same store (it holds image embeddings)
  c.data.scale_batches = 4
  c.n1, c.n2, c.k1, c.k2 = 24, 4, 3, 1
  c.steps, c.batch_size, c.lr, c.warmup_steps = 200, 128, 3e-3, 10
  c.checkpoint_every, c.log_every = 200, 50
  c.families.batchtopk.aux_k = None
  c.families.batchtopk.threshold_start = 20
  c.csae.level1 = ml_collections.ConfigDict(dict(aux_k=None, threshold_start=20))
  c.csae.level2 = ml_collections.ConfigDict(dict(aux_k=None, threshold_start=20))
  c.csae.cascade = ml_collections.ConfigDict(dict(k_anneal_frac=0.1, alphas=(0.02,),
                                                  level_start_steps=(40,)))
  c.eval.chunk_tokens = 256
  c.eval.top_images = 4
  c.report.max_parents = 20
  return c
