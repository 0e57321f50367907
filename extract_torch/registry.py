"""Model-family registry: where to hook each MLLM and which tokens to keep (SPEC section 6).

A Family says which transformers class loads the model, the default hook path and layer, the
stage the hook lives in ("vision": the vision tower, run through `get_image_features`, which
never sees the prompt; "language": the full forward with the prompt), the token rule ("all"
tokens of each image, or "image_tokens": only the positions holding image placeholder tokens,
for language layers), and the rank of the hooked output ([tokens, d] = 2 for Qwen3-VL's
vision blocks, which concatenate the patches of all images; [batch, seq, d] = 3 otherwise).
The "generic" family takes any model id or local path with an explicit module path.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import os

import torch

PAPER_PROMPT = "Describe the image content accurately."
TOKEN_RULES = ("all", "image_tokens", "all_but_first")
STAGES = ("vision", "language")
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclasses.dataclass(frozen=True)
class Family:
  name: str
  model_class: str                 # transformers class name
  processor_class: str             # transformers processor class name
  hook_template: str               # module path with {layer}
  default_layer: int
  stage: str                       # "vision" | "language"
  token_rule: str                  # see TOKEN_RULES
  hooked_rank: int                 # rank of the hooked output
  prompt: str = PAPER_PROMPT
  paper_model: str | None = None   # the checkpoint used in the paper
  paper_d: int | None = None

  def hook_path(self, layer: int | None = None) -> str:
    return self.hook_template.format(layer=self.default_layer if layer is None else int(layer))


FAMILIES = {
    "qwen3_vl": Family("qwen3_vl", "Qwen3VLForConditionalGeneration", "Qwen3VLProcessor",
                       "model.visual.blocks.{layer}", 23, "vision", "all", 2,
                       paper_model="Qwen/Qwen3-VL-4B-Instruct", paper_d=1024),
    "gemma3": Family("gemma3", "Gemma3ForConditionalGeneration", "Gemma3Processor",
                     "model.vision_tower.encoder.layers.{layer}", 26, "vision", "all",
                     3, paper_model="google/gemma-3-4b-it", paper_d=1152),
    "llava": Family("llava", "LlavaForConditionalGeneration", "LlavaProcessor",
                    "model.language_model.layers.{layer}", 39, "language", "image_tokens", 3,
                    paper_model="llava-hf/llava-1.5-13b-hf", paper_d=5120),
    # any model: --module is required; stage and token rule are flags
    "generic": Family("generic", "AutoModelForImageTextToText", "AutoProcessor", "", -1,
                      "language", "image_tokens", 3),
}


class ModulePathError(ValueError):
  """The module path does not exist in the loaded model."""


class HookOutputError(ValueError):
  """The hooked module's output is not a tensor of the expected rank."""


def get_family(name: str) -> Family:
  if name not in FAMILIES:
    raise ValueError(f"unknown model family {name!r}; choose one of {sorted(FAMILIES)}")
  return FAMILIES[name]


def detect_family(model_path: str) -> str:
  """Family from config.json's model_type ("generic" when unknown)."""
  cfg = os.path.join(os.fspath(model_path), "config.json")
  if os.path.isfile(cfg):
    with open(cfg) as f:
      model_type = json.load(f).get("model_type")
    if model_type in FAMILIES:
      return model_type
  return "generic"


def resolve_module(model: torch.nn.Module, path: str) -> torch.nn.Module:
  """model.get_submodule(path), or an error listing the closest existing module paths."""
  try:
    return model.get_submodule(path)
  except AttributeError:
    pass
  names = [n for n, _ in model.named_modules() if n]
  close = difflib.get_close_matches(path, names, n=6, cutoff=0.6)
  # the deepest existing prefix and its children: usually the most useful hint
  parts = path.split(".")
  prefix, parent = "", model
  for i in range(len(parts)):
    cand = ".".join(parts[:i + 1])
    try:
      parent = model.get_submodule(cand)
      prefix = cand
    except AttributeError:
      break
  children = [f"{prefix}.{n}" if prefix else n for n, _ in parent.named_children()]
  if len(children) > 12:
    children = children[:6] + ["..."] + children[-3:]
  raise ModulePathError(
      f"module path {path!r} does not exist in {type(model).__name__}. Closest matches: "
      f"{close or 'none'}. Children of {prefix or '<root>'!r}: {children}")


def hooked_tensor(output, path: str, expected_rank: int) -> torch.Tensor:
  """The hidden states in a module's output (a tensor, or the first element of a tuple/ModelOutput),
  checked to be a floating tensor of rank `expected_rank`."""
  tensor = output
  if not isinstance(tensor, torch.Tensor):
    if isinstance(tensor, (tuple, list)) and tensor and isinstance(tensor[0], torch.Tensor):
      tensor = tensor[0]
    elif hasattr(tensor, "last_hidden_state") and isinstance(tensor.last_hidden_state,
                                                            torch.Tensor):
      tensor = tensor.last_hidden_state
    else:
      raise HookOutputError(f"the output of {path!r} is a {type(output).__name__}, not a tensor "
                            f"(nor a tuple starting with one); hook a module that returns hidden "
                            f"states")
  if tensor.dim() != expected_rank or not tensor.is_floating_point():
    want = "[tokens, d]" if expected_rank == 2 else "[batch, seq, d]"
    raise HookOutputError(f"the output of {path!r} has shape {tuple(tensor.shape)} and dtype "
                          f"{tensor.dtype}; expected a floating tensor of rank {expected_rank} "
                          f"{want}")
  return tensor


# ----------------------------------------------------------------------------- loading
def load_model(family: Family, model_path: str, dtype: str = "float32", device: str = "cpu"):
  """from_pretrained with the family's class, in eval mode on `device`."""
  import transformers
  if dtype not in TORCH_DTYPES:
    raise ValueError(f"dtype must be one of {sorted(TORCH_DTYPES)}, got {dtype!r}")
  if device.startswith("cuda") and not torch.cuda.is_available():
    raise ValueError(f"device {device!r} requested but CUDA is not available")
  cls = getattr(transformers, family.model_class)
  model = cls.from_pretrained(model_path, dtype=TORCH_DTYPES[dtype])
  return model.to(device).eval()


def load_processor(family: Family, model_path: str):
  """AutoProcessor; for Qwen3-VL without torchvision (its video processor needs it) an
  image-only processor with the same image/text behaviour."""
  import transformers
  try:
    processor = transformers.AutoProcessor.from_pretrained(model_path)
  except ImportError as e:
    if family.name != "qwen3_vl" or "torchvision" not in str(e).lower():
      raise
    processor = None
  if getattr(processor, "image_processor", None) is not None:
    return processor
  if family.name == "qwen3_vl":   # AutoProcessor fell back to the bare tokenizer
    return image_only_qwen_processor_class().from_pretrained(model_path)
  raise ValueError(f"AutoProcessor.from_pretrained({model_path!r}) gave a "
                   f"{type(processor).__name__} without an image processor")


_IMAGE_ONLY_QWEN = []


def image_only_qwen_processor_class():
  """Qwen3VLProcessor without the video processor (which requires torchvision); built lazily so
  that importing the registry does not import transformers."""
  if _IMAGE_ONLY_QWEN:
    return _IMAGE_ONLY_QWEN[0]
  from transformers import Qwen3VLProcessor
  from transformers.processing_utils import ProcessorMixin

  class Qwen3VLImageOnlyProcessor(Qwen3VLProcessor):
    """Qwen3VLProcessor for images and text only."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
      self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
      self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
      self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
      self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
      ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template,
                              **kwargs)
      self.vision_start_token = getattr(tokenizer, "vision_start_token", None) or "<|vision_start|>"
      self.vision_end_token = getattr(tokenizer, "vision_end_token", None) or "<|vision_end|>"
      self.vision_start_token_id = tokenizer.convert_tokens_to_ids(self.vision_start_token)
      self.vision_end_token_id = tokenizer.convert_tokens_to_ids(self.vision_end_token)

  _IMAGE_ONLY_QWEN.append(Qwen3VLImageOnlyProcessor)
  return Qwen3VLImageOnlyProcessor


def build_prompt(processor, prompt: str) -> str:
  """One user turn holding an image and the prompt, in the processor's chat format."""
  messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
  if getattr(processor, "chat_template", None):
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
  token = getattr(processor, "image_token", "<image>")
  return f"{token}\n{prompt}"


def image_token_id(model, processor) -> int:
  for obj, attr in ((model.config, "image_token_id"), (model.config, "image_token_index"),
                    (processor, "image_token_id")):
    v = getattr(obj, attr, None)
    if isinstance(v, int):
      return v
  raise ValueError("cannot find the image token id in the model config or processor; use the "
                   "'all' token rule")
