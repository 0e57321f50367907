"""The steering hook (SPEC 5) on tiny random MLLMs of the three families."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.bridge_torch.steer_helpers import random_flat

from bridge_torch import sae as tsae
from bridge_torch import steering
from csae_jax import export

FAMILIES = ["qwen3_vl", "gemma3", "llava"]


@pytest.fixture(scope="session")
def tiny_mllms(tmp_path_factory):
  """family -> (model, processor, Family, hook path); built and reloaded once per session."""
  from extract_torch import registry, tiny_models
  out = {}
  for fam in FAMILIES:
    path = tiny_models.build_tiny(fam, tmp_path_factory.mktemp(fam))
    family = registry.get_family(fam)
    model = registry.load_model(family, path)
    processor = registry.load_processor(family, path)
    out[fam] = (model, processor, family, family.hook_path())
  return out


def _inputs(processor, seed=0):
  from extract_torch import registry
  img = Image.fromarray((np.random.default_rng(seed).random((32, 32, 3)) * 255).astype(np.uint8))
  text = registry.build_prompt(processor, "Describe what is in this image in one short sentence.")
  return processor(images=[img], text=[text], return_tensors="pt")


def _sae(tmp_path, d, name="relu"):
  model, params, state = random_flat(name, d=d, n=48)
  return tsae.load_export(export.export_model(tmp_path / f"{name}{d}", model, params, state)).level1


def _logits(model, inputs):
  with torch.no_grad():
    return model(**inputs).logits


def _capture(model, path):
  """A forward hook registered after the steering hook sees the steered output."""
  seen = []

  def grab(_m, _i, out):
    seen.append(steering._first_tensor(out).detach().clone())
  return steering.resolve_module(model, path).register_forward_hook(grab), seen


@pytest.mark.parametrize("fam", FAMILIES)
def test_hook_changes_outputs_only_with_a_clamp(tiny_mllms, tmp_path, fam):
  model, processor, family, path = tiny_mllms[fam]
  inputs = _inputs(processor)
  d = steering.probe_output_width(model, path, lambda: model(**inputs))
  sae = _sae(tmp_path, d)
  clean = _logits(model, inputs)
  for mode in steering.MODES:
    hook = steering.SteeringHook(sae, mode=mode).attach(model, path,
                                                        run_forward=lambda: model(**inputs))
    try:
      idle = _logits(model, inputs)
      assert hook.calls >= 1 and torch.equal(idle, clean)          # attached, no clamp
      if mode == "error_preserving":
        hook.set_clamp([], 0.0)                                    # computes, adds an exact 0
        assert torch.equal(_logits(model, inputs), clean)
      hook.set_clamp([1, 2, 3], 4.0)
      steered = _logits(model, inputs)
      assert not torch.allclose(steered, clean)
      hook.clear()
      assert torch.equal(_logits(model, inputs), clean)
    finally:
      hook.detach()
  assert torch.equal(_logits(model, inputs), clean)


@pytest.mark.parametrize("fam", FAMILIES)
def test_insertion_and_suppression_move_activations(tiny_mllms, tmp_path, fam):
  model, processor, family, path = tiny_mllms[fam]
  inputs = _inputs(processor, seed=1)
  handle, seen = _capture(model, path)
  _logits(model, inputs)
  handle.remove()
  d = seen[0].shape[-1]
  sae = _sae(tmp_path, d)
  atoms = [0, 5, 9]
  w = sae.atoms()[atoms]
  dense = sae.dense_activation(seen[0].reshape(-1, d).float())[:, atoms]
  sigma = dense[dense > 0].mean().item() if (dense > 0).any() else 1.0   # the scale of A here
  for mode in steering.MODES:
    hook = steering.SteeringHook(sae, mode=mode).attach(model, path)
    handle, seen = _capture(model, path)
    try:
      _logits(model, inputs)                                       # clean (idle hook)
      for sign in (1.0, -1.0):
        hook.set_clamp(atoms, sign * 3 * sigma)
        _logits(model, inputs)
      hook.clear()
    finally:
      handle.remove()
      hook.detach()
    clean, ins, sup = (s.reshape(-1, d).float() for s in seen[:3])
    act = lambda h: sae.dense_activation(h)[:, atoms].sum(1).mean().item()
    proj = lambda h: (h @ w.T).sum(1).mean().item()
    # what the hook writes with the clamp's effect removed: the clean reconstruction or x itself
    base = sae.decode(sae.dense_activation(clean)) if mode == "reconstruction" else clean
    assert proj(ins) > proj(base) > proj(sup), (fam, mode)
    assert act(ins) > act(base) > act(sup), (fam, mode)


def test_width_mismatch_refused_before_generation(tiny_mllms, tmp_path):
  model, processor, family, path = tiny_mllms["gemma3"]
  inputs = _inputs(processor)
  sae = _sae(tmp_path, 16)
  calls = []
  orig = model.generate
  model.generate = lambda *a, **k: calls.append(1) or orig(*a, **k)
  try:
    with pytest.raises(steering.WidthMismatch, match="d=16 but module"):
      steering.SteeringHook(sae).attach(model, path, run_forward=lambda: model(**inputs))
  finally:
    del model.generate
  assert not calls
  assert not steering.resolve_module(model, path)._forward_hooks


def test_bad_clamps_and_paths(tmp_path):
  sae = _sae(tmp_path, 8)
  hook = steering.SteeringHook(sae)
  with pytest.raises(ValueError, match="outside the dictionary"):
    hook.set_clamp([48], 1.0)
  with pytest.raises(ValueError, match="finite"):
    hook.set_clamp([1], float("nan"))
  with pytest.raises(ValueError, match="mode must be"):
    steering.SteeringHook(sae, mode="add")
  net = torch.nn.Sequential(torch.nn.Linear(8, 8))
  with pytest.raises(ValueError, match="closest"):
    hook.attach(net, "1")


def test_llava_steers_image_tokens_only(tiny_mllms, tmp_path):
  """At a language layer only the image-token positions of the prompt pass are clamped."""
  from bridge_torch.captioning import HFCaptioner
  model, processor, family, path = tiny_mllms["llava"]
  cap = HFCaptioner(model, processor, family, max_new_tokens=2)
  img = Image.fromarray((np.random.default_rng(3).random((32, 32, 3)) * 255).astype(np.uint8))
  run = cap.probe(img)
  d = steering.probe_output_width(model, path, run)
  sae = _sae(tmp_path, d)
  hook = steering.SteeringHook(sae, mode="error_preserving", token_mask_fn=cap.token_mask_fn)
  hook.attach(model, path, run_forward=run)
  handle, seen = _capture(model, path)
  try:
    with torch.no_grad():
      run()
      hook.set_clamp([0, 1], 5.0)
      run()
      ids = cap._ids
      caption = cap.caption(img)               # generation runs with the mask (decode steps)
  finally:
    hook.clear()
    handle.remove()
    hook.detach()
  image_pos = (ids == cap.image_token_id)[0]
  assert image_pos.any() and (~image_pos).any()
  clean, steered = seen[0][0], seen[1][0]
  assert torch.equal(clean[~image_pos], steered[~image_pos])
  assert not torch.allclose(clean[image_pos], steered[image_pos])
  assert isinstance(caption, str)
