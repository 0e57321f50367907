"""The tutorial's steering run (README, "Tutorial"): Level-2 clusters of the tutorial's CSAE
steered inside the tiny random Qwen3-VL the store was extracted from.

  python -m launch.steer --config=configs/tutorial_steer.py --workdir=/tmp/csae_tutorial/run \
      --config.train_store=/tmp/csae_tutorial/store --config.images=/tmp/csae_tutorial/heldout \
      --config.out_dir=/tmp/csae_tutorial/steer

The model path, its family and the hooked module come from the store manifest and the export.
Expected (about 30 s on 2 CPU cores): table3.csv, table3_per_cluster.csv and captions.csv in
out_dir; a random-weight model captions gibberish, so the rates test the pipeline, not steering.
"""
from configs import steer_qwen3vl


def get_config():
  c = steer_qwen3vl.get_config()
  c.model_family = ""        # from the store manifest
  c.model_path = ""          # from the store manifest
  c.max_new_tokens = 4
  c.steer.num_clusters = 2
  c.steer.insert_images = 2
  c.steer.top_images = 4
  c.steer.min_children = 2
  return c
