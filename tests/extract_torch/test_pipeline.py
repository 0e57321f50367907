"""Extraction on tiny Qwen3-VL / Gemma-3 / LLaVA: hooked shapes, tokens per image against the
processor's own counts, values against an independent forward pass, exact store round trip,
bad inputs, shards."""
import os

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from csae_jax import store as store_lib
from extract_torch import pipeline, registry, sources

SIZES = [32, 40, 48]        # Qwen3-VL token counts vary with the image size
BATCH = 4


def _source(n_per_class=2):
  return sources.procedural_source(n_per_class, sizes=SIZES)


def _reference(family, path, images):
  """Independent reference: a fresh from_pretrained copy, the full forward pass, our own plain
  hook (or transformers' hidden_states), tokens selected from the processor's input ids.
  Returns (per-image activations, per-image token counts implied by the processor)."""
  fam = registry.get_family(family)
  model = getattr(transformers, fam.model_class).from_pretrained(path).eval()
  proc = registry.load_processor(fam, path)
  text = registry.build_prompt(proc, registry.PAPER_PROMPT)
  acts, counts = [], []
  for lo in range(0, len(images), BATCH):      # same batches as the extraction
    batch = images[lo:lo + BATCH]
    inputs = proc(text=[text] * len(batch), images=[[im] for im in batch], return_tensors="pt",
                  padding=True)
    ids = inputs["input_ids"]
    captured = []
    if family == "qwen3_vl":
      mod = model.model.visual.blocks[23]
    elif family == "gemma3":
      mod = model.model.vision_tower.encoder.layers[26]
    else:
      mod = model.model.language_model.layers[39]
    handle = mod.register_forward_hook(lambda m, i, o: captured.append(o))
    with torch.no_grad():
      out = model(**inputs, output_hidden_states=(family == "llava"))
    handle.remove()
    if family == "qwen3_vl":
      merge = proc.image_processor.merge_size ** 2
      n = ((ids == model.config.image_token_id).sum(1) * merge).tolist()   # LLM tokens x 2x2
      acts += list(torch.split(captured[0], n))
      counts += n
    elif family == "gemma3":
      cfg = model.config
      per_side = cfg.vision_config.image_size // cfg.vision_config.patch_size
      pool = (per_side // int(cfg.mm_tokens_per_image ** 0.5)) ** 2
      n = ((ids == cfg.image_token_index).sum(1) * pool).tolist()   # soft tokens x pooling
      h = captured[0]
      assert h.shape[1] == n[0]
      acts += list(h)
      counts += n
    else:
      h = captured[0]                         # output of decoder layer 39 (the last of 40)
      # transformers' own hidden_states[40] is that output after the final norm
      torch.testing.assert_close(model.model.language_model.norm(h), out.hidden_states[40])
      mask = ids == model.config.image_token_index
      acts += [h[i][mask[i]] for i in range(len(batch))]
      counts += mask.sum(1).tolist()
  return [a.float().numpy() for a in acts], np.asarray(counts)


@pytest.mark.parametrize("family", ["qwen3_vl", "gemma3", "llava"])
def test_extract_matches_independent_forward(family, tiny_dirs, hooked, tmp_path):
  src = _source()
  out = tmp_path / "store"
  cfg = pipeline.ExtractConfig(model=tiny_dirs[family], out=str(out), batch_size=BATCH,
                               chunk_tokens=50, progress=False)
  res = pipeline.extract(cfg, src, hooked=hooked[family])
  st = store_lib.ActivationStore.open(res.path, verify=True)
  images = [src.load(i) for i in range(len(src))]
  ref, ref_counts = _reference(family, tiny_dirs[family], images)

  # hooked shape: [tokens, 32] per image; tokens per image = the processor's own counts
  assert st.d == 32 and st.num_images == len(src)
  np.testing.assert_array_equal(st.tokens_per_image, ref_counts)
  if family == "qwen3_vl":     # (side / 8)^2 patches, side rounded to a multiple of 16
    assert st.tokens_per_image.tolist() == [16, 16, 36] * 2
  elif family == "gemma3":
    assert st.tokens_per_image.tolist() == [64] * 6
  else:                        # image tokens only: (28 / 7)^2, prompt tokens dropped
    assert st.tokens_per_image.tolist() == [16] * 6
  for i in range(len(src)):
    np.testing.assert_allclose(st.image_tokens(i), ref[i], rtol=1e-5, atol=1e-6)
  # the store holds exactly what the hooked model produced
  direct = np.concatenate([hooked[family](images[lo:lo + BATCH])[0]
                           for lo in range(0, len(images), BATCH)])
  np.testing.assert_array_equal(st.read_tokens(0, st.num_tokens), direct)
  assert st.image_ids == src.ids and st.labels.tolist() == src.labels.tolist()
  m = st.manifest
  assert m["hooked_module"] == registry.get_family(family).hook_path()
  assert m["family"] == family and m["label_names"] == ["red", "green", "blue"]
  assert m["token_rule"] == ("image_tokens" if family == "llava" else "all")


def test_store_dtypes_and_bfloat16_model(tiny_dirs, hooked, tmp_path):
  src = sources.procedural_source(1, size=32)
  images = [src.load(i) for i in range(3)]
  f32 = hooked["gemma3"](images)[0]
  cfg = pipeline.ExtractConfig(model=tiny_dirs["gemma3"], out=str(tmp_path / "f16"),
                               store_dtype="float16", progress=False)
  st = store_lib.ActivationStore.open(pipeline.extract(cfg, src, hooked=hooked["gemma3"]).path)
  assert st.dtype == "float16"
  np.testing.assert_array_equal(st.read_tokens(0, st.num_tokens),
                                f32.astype(np.float16).astype(np.float32))
  cfg = pipeline.ExtractConfig(model=tiny_dirs["gemma3"], out=str(tmp_path / "bf16"),
                               dtype="bfloat16", progress=False)
  res = pipeline.extract(cfg, src)
  st = store_lib.ActivationStore.open(res.path, verify=True)
  assert st.dtype == "bfloat16" and st.manifest["model_dtype"] == "bfloat16"
  got = st.read_tokens(0, st.num_tokens)
  # bfloat16 compute: close to float32 (relative to the activation scale), not equal
  scale = np.abs(f32).max()
  assert np.abs(got - f32).max() < 0.05 * scale and not np.array_equal(got, f32)


def _image_folder(root):
  """2 classes; one corrupt JPEG, one truncated PNG, one non-image with an image suffix."""
  rng = np.random.default_rng(0)
  for c in ("cat", "dog"):
    os.makedirs(root / c)
    for k in range(3):
      Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / c / f"{k}.png")
  (root / "cat" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
  raw = (root / "dog" / "1.png").read_bytes()
  (root / "dog" / "1.png").write_bytes(raw[:60])
  (root / "dog" / "notes.png").write_text("hello")
  return root


def test_unreadable_images_skipped_and_listed_or_strict_error(tiny_dirs, hooked, tmp_path):
  src = sources.folder_source(_image_folder(tmp_path / "imgs"))
  assert src.label_names == ["cat", "dog"] and len(src) == 8
  cfg = pipeline.ExtractConfig(model=tiny_dirs["gemma3"], out=str(tmp_path / "s"), batch_size=3,
                               progress=False)
  res = pipeline.extract(cfg, src, hooked=hooked["gemma3"])
  st = store_lib.ActivationStore.open(res.path, verify=True)
  skipped = {r["id"] for r in st.manifest["skipped_images"]}
  assert skipped == {"cat/bad.jpg", "dog/1.png", "dog/notes.png"}
  assert st.image_ids == ["cat/0.png", "cat/1.png", "cat/2.png", "dog/0.png", "dog/2.png"]
  assert st.labels.tolist() == [0, 0, 0, 1, 1]
  cfg = pipeline.ExtractConfig(model=tiny_dirs["gemma3"], out=str(tmp_path / "strict"),
                               strict=True, progress=False)
  with pytest.raises(pipeline.ExtractionError, match="cat/bad.jpg.*--strict"):
    pipeline.extract(cfg, src, hooked=hooked["gemma3"])
  assert not os.path.exists(tmp_path / "strict")


def test_missing_module_lists_close_matches(tiny_dirs, tmp_path):
  cfg = pipeline.ExtractConfig(model=tiny_dirs["qwen3_vl"], out=str(tmp_path / "s"),
                               module="model.visual.block.23")
  with pytest.raises(registry.ModulePathError, match=r"Closest matches: \['model.visual.blocks.23'"):
    pipeline.extract(cfg, _source())
  cfg = pipeline.ExtractConfig(model=tiny_dirs["llava"], out=str(tmp_path / "s"), layer=40)
  with pytest.raises(registry.ModulePathError, match="model.language_model.layers.39"):
    pipeline.extract(cfg, _source())
  assert not os.path.exists(tmp_path / "s") and not os.path.exists(str(tmp_path / "s") + ".partial")


def test_hooked_output_of_wrong_rank_or_type(tiny_dirs, hooked, tmp_path):
  model = hooked["gemma3"].model
  conv = "model.vision_tower.embeddings.patch_embedding"          # Conv2d: [B, C, H, W]
  cfg = pipeline.ExtractConfig(model=tiny_dirs["gemma3"], out=str(tmp_path / "s"), module=conv)
  with pytest.raises(registry.HookOutputError, match=r"shape \(1, 32, 8, 8\).*rank 3"):
    pipeline.extract(cfg, _source())
  assert not os.path.exists(tmp_path / "s")
  with pytest.raises(registry.HookOutputError, match="is a dict, not a tensor"):
    registry.hooked_tensor({"a": 1}, "x", 3)
  del model


def test_existing_store_refused_without_overwrite(tiny_dirs, hooked, tmp_path):
  src = sources.procedural_source(1)
  cfg = pipeline.ExtractConfig(model=tiny_dirs["gemma3"], out=str(tmp_path / "s"), progress=False)
  first = store_lib.ActivationStore.open(pipeline.extract(cfg, src, hooked=hooked["gemma3"]).path)
  with pytest.raises(store_lib.StoreError, match="already exists.*--overwrite"):
    pipeline.extract(cfg, sources.procedural_source(2), hooked=hooked["gemma3"])
  assert store_lib.ActivationStore.open(first.path, verify=True).num_images == 3
  cfg.overwrite = True
  pipeline.extract(cfg, sources.procedural_source(2), hooked=hooked["gemma3"])
  assert store_lib.ActivationStore.open(first.path, verify=True).num_images == 6


def test_two_shards_combine_to_one_run(tiny_dirs, hooked, tmp_path):
  src = _source(3)                                   # 9 images, batches of 2 -> 5 batches
  base = dict(model=tiny_dirs["qwen3_vl"], batch_size=2, chunk_tokens=40, progress=False)
  one = pipeline.extract(pipeline.ExtractConfig(out=str(tmp_path / "one"), **base), src,
                         hooked=hooked["qwen3_vl"])
  for k in range(2):
    pipeline.extract(pipeline.ExtractConfig(out=str(tmp_path / "sh"), shard_index=k, num_shards=2,
                                            **base), src, hooked=hooked["qwen3_vl"])
  shard0 = store_lib.ActivationStore.open(pipeline.shard_path(tmp_path / "sh", 0, 2))
  assert shard0.num_images == 4                      # batches 0..1 of 0..4 (whole batches)
  combined = store_lib.ActivationStore.open(pipeline.combine_shards(str(tmp_path / "sh"), 2),
                                            verify=True)
  ref = store_lib.ActivationStore.open(one.path)
  assert combined.manifest["checksums"] == ref.manifest["checksums"]
  np.testing.assert_array_equal(combined.read_tokens(0, combined.num_tokens),
                                ref.read_tokens(0, ref.num_tokens))
  np.testing.assert_array_equal(combined.token_offsets, ref.token_offsets)
  assert combined.image_ids == ref.image_ids
  with pytest.raises(store_lib.StoreError, match="shards not finished"):
    pipeline.combine_shards(str(tmp_path / "sh"), 3)


def test_reference_embeddings_stored(tiny_dirs, hooked, effnet, tmp_path):
  src = sources.procedural_source(1, size=32)
  cfg = pipeline.ExtractConfig(model=tiny_dirs["gemma3"], out=str(tmp_path / "s"), batch_size=2,
                               embedding_backbone="efficientnet_lite0", progress=False)
  st = store_lib.ActivationStore.open(
      pipeline.extract(cfg, src, hooked=hooked["gemma3"], backbone=effnet).path, verify=True)
  assert st.manifest["embedding"] == {"backbone": "efficientnet_lite0", "dim": 1280}
  images = [src.load(i) for i in range(len(src))]
  ref = np.concatenate([effnet.embed(images[:2]), effnet.embed(images[2:])])
  np.testing.assert_array_equal(st.embeddings(), ref)


def test_progress_reports_rate_and_eta(capsys):
  p = pipeline.Progress(total=10, initial=2, enabled=True, every=0.0)
  p.update(4)
  p.close()
  err = capsys.readouterr().err
  assert "extract: 6/10 images" in err and "images/s, ETA" in err


def test_generic_family_any_module_all_tokens(tiny_dirs, tmp_path):
  """Generic entry: model by path + module path + token rule; checked against transformers'
  own hidden_states (layer 10's output is hidden_states[11])."""
  path = tiny_dirs["llava"]
  src = sources.procedural_source(1, size=28)
  cfg = pipeline.ExtractConfig(model=path, out=str(tmp_path / "g"), family="generic",
                               module="model.language_model.layers.10", stage="language",
                               token_rule="all", batch_size=3, progress=False)
  st = store_lib.ActivationStore.open(pipeline.extract(cfg, src).path, verify=True)
  assert st.manifest["family"] == "generic" and st.manifest["token_rule"] == "all"
  model = transformers.LlavaForConditionalGeneration.from_pretrained(path).eval()
  proc = registry.load_processor(registry.get_family("llava"), path)
  text = registry.build_prompt(proc, registry.PAPER_PROMPT)
  images = [src.load(i) for i in range(3)]
  inputs = proc(text=[text] * 3, images=[[im] for im in images], return_tensors="pt")
  with torch.no_grad():
    hs = model(**inputs, output_hidden_states=True).hidden_states[11]
  n = inputs["attention_mask"].sum(1)
  np.testing.assert_array_equal(st.tokens_per_image, n.numpy())   # every prompt token kept
  np.testing.assert_allclose(st.read_tokens(0, st.num_tokens), hs.reshape(-1, 32).numpy(),
                             rtol=1e-5, atol=1e-6)
  with pytest.raises(pipeline.ExtractionError, match="--module"):
    pipeline.extract(pipeline.ExtractConfig(model=path, out=str(tmp_path / "h"),
                                            family="generic"), src)


def test_shards_with_skipped_images_combine_to_one_run(tiny_dirs, hooked, tmp_path):
  src = sources.folder_source(_image_folder(tmp_path / "imgs"))   # 8 files, 3 unreadable
  base = dict(model=tiny_dirs["gemma3"], batch_size=2, chunk_tokens=100, progress=False)
  one = store_lib.ActivationStore.open(pipeline.extract(
      pipeline.ExtractConfig(out=str(tmp_path / "one"), **base), src, hooked=hooked["gemma3"]).path)
  for k in range(3):
    pipeline.extract(pipeline.ExtractConfig(out=str(tmp_path / "sh"), shard_index=k, num_shards=3,
                                            **base), src, hooked=hooked["gemma3"])
  comb = store_lib.ActivationStore.open(pipeline.combine_shards(str(tmp_path / "sh"), 3),
                                        verify=True)
  assert comb.manifest["checksums"] == one.manifest["checksums"]
  assert comb.image_ids == one.image_ids and len(comb.image_ids) == 5
  assert comb.manifest["skipped_images"] == one.manifest["skipped_images"]
  assert len(one.manifest["skipped_images"]) == 3


def test_fifo_in_image_folder_is_listed_in_the_manifest(tiny_dirs, hooked, tmp_path):
  root = tmp_path / "imgs"
  os.makedirs(root / "cat")
  Image.new("RGB", (32, 32), (200, 10, 10)).save(root / "cat" / "0.png")
  os.mkfifo(root / "cat" / "x.png")
  src = sources.folder_source(root)
  cfg = pipeline.ExtractConfig(model=tiny_dirs["gemma3"], out=str(tmp_path / "s"), progress=False)
  st = store_lib.ActivationStore.open(pipeline.extract(cfg, src, hooked=hooked["gemma3"]).path)
  assert st.image_ids == ["cat/0.png"]
  assert st.manifest["source"]["not_regular_files"] == ["cat/x.png"]


def test_overwrite_refuses_an_unrelated_out_before_loading_the_model(tmp_path):
  """Row 4 of issue 10: --overwrite onto a folder that is not a store deleted it."""
  victim = tmp_path / "notes"
  victim.mkdir()
  (victim / "todo.txt").write_text("keep me")
  cfg = pipeline.ExtractConfig(model=str(tmp_path / "no_model_needed"), out=str(victim),
                               overwrite=True, progress=False)
  with pytest.raises(store_lib.StoreError, match="does not hold an activation store"):
    pipeline.extract(cfg, sources.procedural_source(n_per_class=1))
  assert (victim / "todo.txt").read_text() == "keep me"
