"""Greedy captions from a transformers MLLM under the steering hook (SPEC 5, Protocol).

The prompt and length are the paper's: "Describe what is in this image in one short sentence.",
30 new tokens, greedy, no system prompt. Images go through the family's processor and chat format
(extract_torch.registry). For language-layer hooks (LLaVA) only image-token positions are steered.
"""
from __future__ import annotations

import torch

STEER_PROMPT = "Describe what is in this image in one short sentence."
MAX_NEW_TOKENS = 30


class HFCaptioner:
  """caption(image) -> str, and the pieces the hook needs (probe forward, token mask)."""

  def __init__(self, model, processor, family, *, prompt: str = STEER_PROMPT,
               max_new_tokens: int = MAX_NEW_TOKENS):
    from extract_torch import registry
    self.model = model
    self.processor = processor
    self.family = family
    self.prompt = prompt
    self.max_new_tokens = int(max_new_tokens)
    self.text = registry.build_prompt(processor, prompt)
    self.image_token_id = (registry.image_token_id(model, processor)
                           if family.token_rule == "image_tokens" else None)
    self._ids = None
    self.hooks = []

  def inputs(self, image):
    return self.processor(images=[image.convert("RGB")], text=[self.text], return_tensors="pt")

  def token_mask_fn(self, hidden: torch.Tensor) -> torch.Tensor:
    """Image-token positions of the prompt pass (decode steps see no image tokens)."""
    ids = self._ids
    if self.image_token_id is None or ids is None:
      return torch.ones(hidden.shape[:-1], dtype=torch.bool)
    if hidden.dim() == 3 and hidden.shape[1] == ids.shape[1]:
      return ids == self.image_token_id
    return torch.zeros(hidden.shape[:-1], dtype=torch.bool)

  def probe(self, image):
    """A thunk running one forward pass (for the width check before any generation)."""
    inputs = self.inputs(image)

    def run():
      self._ids = inputs["input_ids"]
      return self.model(**inputs)
    return run

  @torch.no_grad()
  def caption(self, image) -> str:
    inputs = self.inputs(image)
    self._ids = inputs["input_ids"]
    try:
      out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                num_beams=1)
    finally:
      self._ids = None
    new = out[:, inputs["input_ids"].shape[1]:]
    return self.processor.batch_decode(new, skip_special_tokens=True)[0].strip()
