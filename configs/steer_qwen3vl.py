"""Steering on Qwen3-VL-4B (SPEC 5, the paper's Table 3 setting: COCO, 10 clusters).

  python -m launch.steer --config=configs/steer_qwen3vl.py --workdir=runs/csae \
      --config.train_store=stores/qwen3vl_coco_train --config.images=data/coco_heldout \
      --config.model_path=Qwen/Qwen3-VL-4B-Instruct --config.out_dir=steer/qwen3vl
Other families: --config.model_family=gemma3 | llava (configs/steer_gemma3.py, steer_llava.py).
"""
import ml_collections

STEER_PROMPT = "Describe what is in this image in one short sentence."


def get_config(family: str = "qwen3_vl"):
  c = ml_collections.ConfigDict()
  c.export = ""             # a native export (python -m csae_jax.export / bridge_torch.ae_import),
                            # or a trained run: --workdir (exported to <out_dir>/export)
  c.matryoshka_export = ""  # optional Matryoshka SAE for the matched-set arm
  c.train_store = ""        # the activations the SAE was trained on (sigma_A, top images, concepts)
  c.images = ""             # folder (or .txt list) of held-out images
  c.model_family = family   # extract_torch.registry family ("" = the train store's)
  c.model_path = ""         # "" = the model the train store was extracted from
  c.module = ""             # default: the export's hooked_module, else the family's default layer
  c.dtype = "float32"
  c.device = "cpu"
  c.prompt = STEER_PROMPT
  c.max_new_tokens = 30
  c.mode = "reconstruction"  # or "error_preserving" (SPEC 5 option)
  # clusters: Level-2 units to steer ([] = num_clusters drawn with seed); concepts: {"unit": label}
  # for the judge (default: the most common label of the cluster's top training images)
  c.steer = ml_collections.ConfigDict(dict(
      num_clusters=10, clusters=(), concepts={}, seed=0, top_images=10, insert_images=100,
      scale_mult=3.0, threshold_floor=1.0, min_children=2, chunk_tokens=4096,
      release_faithful=False))   # True: the release's sigma_A / top images / alive rule
  c.judge = ml_collections.ConfigDict(dict(
      name="wordlist",       # wordlist | minilm | http
      threshold=0.35,        # minilm cosine threshold
      url="", key="", model=""))   # http: else CSAE_JUDGE_URL / CSAE_JUDGE_KEY / CSAE_JUDGE_MODEL
  c.out_dir = ""
  c.overwrite = False
  return c
