"""Tiny models: the paper's hook points exist, and model + processor reload with from_pretrained."""
import json
import os

import pytest
import transformers

from extract_torch import registry, tiny_models

DEPTH = {"qwen3_vl": ("model.visual.blocks", 24), "gemma3": ("model.vision_tower.encoder.layers", 27),
         "llava": ("model.language_model.layers", 40)}


@pytest.mark.parametrize("family", tiny_models.FAMILIES)
def test_paper_layer_present_and_reloads(family, tiny_dirs, hooked):
  fam = registry.get_family(family)
  model = hooked[family].model
  assert type(model).__name__ == fam.model_class
  stack, depth = DEPTH[family]
  assert len(model.get_submodule(stack)) == depth            # paper layer is the last one
  assert registry.resolve_module(model, fam.hook_path()) is model.get_submodule(stack)[depth - 1]
  assert registry.detect_family(tiny_dirs[family]) == family
  # every saved tensor is loaded as is, none re-initialised (keys may be renamed on save)
  from safetensors.torch import load_file
  saved = load_file(os.path.join(tiny_dirs[family], "model.safetensors"))
  def digest(tensors):
    return sorted((tuple(t.shape), round(float(t.double().sum()), 6)) for t in tensors)
  loaded = {p.data_ptr(): p for p in model.state_dict().values()}   # tied weights once
  assert digest(saved.values()) == digest(loaded.values())
  # no weight matrix is left at zero by the random init (Gemma-3's image projection was)
  zero = [k for k, t in saved.items() if t.dim() >= 2 and not t.any()]
  assert not zero, zero
  # the processor's image token is the model's
  proc = hooked[family].processor
  tok = proc.tokenizer
  assert tok.convert_tokens_to_ids(tok.image_token) == registry.image_token_id(model, proc)
  auto = transformers.AutoConfig.from_pretrained(tiny_dirs[family])
  assert auto.model_type == family
  with open(os.path.join(tiny_dirs[family], "tiny_model.json")) as f:
    assert json.load(f)["family"] == family


def test_chat_prompts_in_family_format(hooked):
  prompt = {f: registry.build_prompt(hooked[f].processor, registry.PAPER_PROMPT)
            for f in tiny_models.FAMILIES}
  assert prompt["qwen3_vl"].startswith("<|im_start|>user\n<|vision_start|><|image_pad|>")
  assert "<start_of_image>Describe the image content accurately.<end_of_turn>" in prompt["gemma3"]
  assert prompt["llava"] == "USER: <image>\nDescribe the image content accurately. ASSISTANT:"
  ids = hooked["llava"].processor.tokenizer(prompt["llava"])["input_ids"]
  assert hooked["llava"].processor.tokenizer.unk_token_id not in ids   # every word is known


def test_registry_errors(hooked):
  with pytest.raises(ValueError, match="unknown model family 'qwen'"):
    registry.get_family("qwen")
  with pytest.raises(ValueError, match="unknown tiny model family"):
    tiny_models.build_tiny("llama", "/nonexistent")
  with pytest.raises(registry.ModulePathError,
                     match=r"Closest matches: \['model.vision_tower.encoder.layers.26'"):
    registry.resolve_module(hooked["gemma3"].model, "model.vision_tower.vision_model.encoder.layers.26")
  with pytest.raises(ValueError, match="dtype must be one of"):
    registry.load_model(registry.get_family("llava"), "/nonexistent", dtype="int8")
