"""Tiny random-weight Qwen3-VL, Gemma-3 and LLaVA models, for offline tests and demos.

Built from config objects with the real transformers classes, deep enough that the paper's hook
points exist (SPEC section 6: Qwen3-VL vision block 23, Gemma-3 vision layer 26, LLaVA language
layer 39) but a few thousand parameters wide. Each is saved with a working processor (a tiny
word-level tokenizer carrying the family's special image tokens, the family's image processor at
a small image size, and a chat template in the family's format) and reloads with from_pretrained.
"""
from __future__ import annotations

import json
import os

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

FAMILIES = ("qwen3_vl", "gemma3", "llava")

# Words of the paper prompt, the chat formats and a few common ones (steering demos).
_WORDS = ("Describe the image content accurately . USER ASSISTANT : user model assistant system "
          "a an of in on is it this that what color red green blue yellow black white dog cat "
          "bird car tree sky water picture photo shows there are and with , ? ! you I".split())

_QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif c['type'] == 'text' %}{{ c['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
_GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>"
    "{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<start_of_image>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
_LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: "
    "{% endif %}{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>\n"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{% if message['role'] == 'user' %} {% else %}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}")


def tiny_tokenizer(specials: dict[str, str], extra_specials: dict[str, str] | None = None,
                   template: str | None = None) -> PreTrainedTokenizerFast:
  """A word-level tokenizer: the family's special tokens first, then a small word list.

  specials: standard roles (bos_token, eos_token, pad_token, unk_token) -> token text.
  extra_specials: model-specific named tokens (e.g. image_token) -> token text; they become
  attributes (tokenizer.image_token, tokenizer.image_token_id) like the real tokenizers.
  """
  extra_specials = dict(extra_specials or {})
  names = list(dict.fromkeys([*specials.values(), *extra_specials.values()]))
  vocab = {t: i for i, t in enumerate(names + [w for w in _WORDS if w not in names])}
  unk = specials.get("unk_token", "[UNK]")
  if unk not in vocab:
    vocab[unk] = len(vocab)
  core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
  core.pre_tokenizer = pre_tokenizers.Whitespace()
  core.decoder = decoders.WordPiece(prefix="##")   # joins words with spaces
  tok = PreTrainedTokenizerFast(tokenizer_object=core, **specials,
                                extra_special_tokens=extra_specials or None)
  tok.add_special_tokens({"extra_special_tokens": [t for t in names if t not in
                                                   specials.values()]},
                         replace_extra_special_tokens=False)
  if template is not None:
    tok.chat_template = template
  return tok


def _randomize_zero_matrices(model) -> None:
  """Random init leaves some matrices at exactly zero (Gemma-3's mm_input_projection_weight), which
  would make a tiny model's logits ignore the image; give them random values (seeded by the
  caller's torch RNG) so image-side hooks and steering are visible downstream."""
  with torch.no_grad():
    for p in model.parameters():
      if p.dim() >= 2 and not p.any():
        p.copy_(0.2 * torch.randn(p.shape))


def _save(model, processor, out_dir: str, family: str, info: dict) -> str:
  os.makedirs(out_dir, exist_ok=True)
  _randomize_zero_matrices(model)
  model.save_pretrained(out_dir, safe_serialization=True)
  processor.save_pretrained(out_dir)
  with open(os.path.join(out_dir, "tiny_model.json"), "w") as f:
    json.dump({"family": family, **info}, f, indent=1)
  return out_dir


def _build_qwen3_vl(out_dir: str, width: int = 32) -> str:
  from transformers import (Qwen2VLImageProcessorPil, Qwen3VLConfig,
                            Qwen3VLForConditionalGeneration)
  tok = tiny_tokenizer(
      {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": "[UNK]"},
      {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
       "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>",
       "im_start": "<|im_start|>"}, _QWEN_TEMPLATE)
  ids = {n: tok.convert_tokens_to_ids(t) for n, t in
         (("image", "<|image_pad|>"), ("video", "<|video_pad|>"),
          ("start", "<|vision_start|>"), ("end", "<|vision_end|>"))}
  vision = dict(depth=24, hidden_size=width, intermediate_size=2 * width, num_heads=2,
                patch_size=8, spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=32,
                num_position_embeddings=64, deepstack_visual_indexes=[5, 11, 17])
  text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=2, num_key_value_heads=1, head_dim=16,
              max_position_embeddings=1024, pad_token_id=tok.pad_token_id,
              rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                               "mrope_section": [4, 2, 2], "mrope_interleaved": True})
  config = Qwen3VLConfig(vision_config=vision, text_config=text, image_token_id=ids["image"],
                         video_token_id=ids["video"], vision_start_token_id=ids["start"],
                         vision_end_token_id=ids["end"])
  model = Qwen3VLForConditionalGeneration(config).eval()
  # 32x32..256x256 pixels (the paper resizes to 256): 16..1024 patches of 8x8, merged 2x2
  image_processor = Qwen2VLImageProcessorPil(
      size={"shortest_edge": 32 * 32, "longest_edge": 256 * 256}, patch_size=8, merge_size=2,
      temporal_patch_size=2)
  processor = _qwen_processor(image_processor, tok)
  _save(model, processor, out_dir, "qwen3_vl", {"image_size": 32})
  if not getattr(processor, "video_processor", None):
    for name in ("processor_config.json", "tokenizer_config.json"):   # the real class name
      path = os.path.join(out_dir, name)
      with open(path) as f:
        text = f.read()
      with open(path, "w") as f:
        f.write(text.replace('"Qwen3VLImageOnlyProcessor"', '"Qwen3VLProcessor"'))
    # No torchvision here: write the video processor config a real Qwen3-VL checkout has, so
    # AutoProcessor works where torchvision is installed.
    with open(os.path.join(out_dir, "video_preprocessor_config.json"), "w") as f:
      json.dump({"video_processor_type": "Qwen3VLVideoProcessor", "patch_size": 8,
                 "merge_size": 2, "temporal_patch_size": 2,
                 "size": {"shortest_edge": 32 * 32, "longest_edge": 256 * 256 * 8},
                 "processor_class": "Qwen3VLProcessor"}, f, indent=1)
  return out_dir


def _qwen_processor(image_processor, tokenizer):
  from transformers import Qwen3VLProcessor
  try:
    from transformers import Qwen3VLVideoProcessor
    video = Qwen3VLVideoProcessor(patch_size=8, merge_size=2, temporal_patch_size=2)
  except ImportError:     # needs torchvision
    from extract_torch.registry import image_only_qwen_processor_class
    return image_only_qwen_processor_class()(image_processor=image_processor, tokenizer=tokenizer,
                                     chat_template=tokenizer.chat_template)
  return Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                          video_processor=video, chat_template=tokenizer.chat_template)


def _build_gemma3(out_dir: str, width: int = 32) -> str:
  from transformers import (Gemma3Config, Gemma3ForConditionalGeneration,
                            Gemma3ImageProcessorPil, Gemma3Processor)
  tok = tiny_tokenizer(
      {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"},
      {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>",
       "eoi_token": "<end_of_image>", "sot": "<start_of_turn>", "eot": "<end_of_turn>"},
      _GEMMA_TEMPLATE)
  vision = dict(model_type="siglip_vision_model", hidden_size=width, intermediate_size=2 * width,
                num_hidden_layers=27, num_attention_heads=2, image_size=32, patch_size=4,
                vision_use_head=False)
  text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=2, num_key_value_heads=1, head_dim=16,
              query_pre_attn_scalar=16, sliding_window=16, max_position_embeddings=1024,
              pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
              eos_token_id=tok.eos_token_id)
  config = Gemma3Config(vision_config=vision, text_config=text, mm_tokens_per_image=16,
                        boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
                        eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"),
                        image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"))
  model = Gemma3ForConditionalGeneration(config).eval()
  image_processor = Gemma3ImageProcessorPil(size={"height": 32, "width": 32})
  processor = Gemma3Processor(image_processor=image_processor, tokenizer=tok,
                              chat_template=tok.chat_template, image_seq_length=16)
  return _save(model, processor, out_dir, "gemma3", {"image_size": 32})


def _build_llava(out_dir: str, width: int = 32) -> str:
  from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
  tok = tiny_tokenizer(
      {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"},
      {"image_token": "<image>"}, _LLAVA_TEMPLATE)
  vision = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64,
                num_hidden_layers=2, num_attention_heads=2, image_size=28, patch_size=7,
                projection_dim=32)
  text = dict(model_type="llama", vocab_size=len(tok), hidden_size=width,
              intermediate_size=2 * width,
              num_hidden_layers=40, num_attention_heads=2, num_key_value_heads=2,
              max_position_embeddings=1024, pad_token_id=tok.pad_token_id,
              bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
  config = LlavaConfig(vision_config=vision, text_config=text,
                       image_token_index=tok.convert_tokens_to_ids("<image>"), image_seq_length=16,
                       vision_feature_layer=-2, vision_feature_select_strategy="default")
  model = LlavaForConditionalGeneration(config).eval()
  image_processor = _clip_image_processor(28)
  processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=7,
                             vision_feature_select_strategy="default",
                             num_additional_image_tokens=1, chat_template=tok.chat_template)
  return _save(model, processor, out_dir, "llava", {"image_size": 28})


def _clip_image_processor(size: int):
  cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
  return cls(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


_BUILDERS = {"qwen3_vl": _build_qwen3_vl, "gemma3": _build_gemma3, "llava": _build_llava}


def build_tiny(family: str, out_dir, seed: int = 0, width: int = 32) -> str:
  """Build, save and return the directory of a tiny random-weight model of `family`.

  width: hidden size at the hooked layer (= d of the stored activations); 32 by default.
  """
  if family not in _BUILDERS:
    raise ValueError(f"unknown tiny model family {family!r}; choose one of {FAMILIES}")
  out_dir = os.fspath(out_dir)
  with torch.random.fork_rng():
    torch.manual_seed(seed)
    return _BUILDERS[family](out_dir, width=int(width))
