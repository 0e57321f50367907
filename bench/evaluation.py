"""Evaluation at the paper's scale on CPU: peak memory and time (SPEC 4; issue 5 acceptance).

  python -m bench.evaluation --tokens=1048576 --d=1024 --n1=20000 --n2=10000 --kind=cascade
  python -m bench.evaluation --tokens=65536 --kind=pair          # two flat SAEs: + co-activation

Streams `tokens` synthetic activations (generated per chunk, as a store read would deliver them;
256 tokens per image) through the chunked pass of a random-weight model, then computes prototypes
from 1024-d reference embeddings, parent maps and HMS. Reports peak RSS (ru_maxrss), the time of
each stage and tokens/s. HMS over `hms_parents` parents is also timed on its own.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import time


from absl import app
from absl import flags
import jax
import numpy as np

from csae_jax.evaluation import codes as codes_lib
from csae_jax.evaluation import evaluator
from csae_jax.evaluation import hms as hms_lib
from csae_jax.evaluation import subjects
from csae_jax.models import build_model

_TOKENS = flags.DEFINE_integer("tokens", 65536, "Tokens streamed through the pass.")
_D = flags.DEFINE_integer("d", 1024, "Activation width.")
_N1 = flags.DEFINE_integer("n1", 20000, "Level-1 dictionary size.")
_N2 = flags.DEFINE_integer("n2", 10000, "Level-2 size.")
_K = flags.DEFINE_integer("k", 6, "Level-1 k.")
_TPI = flags.DEFINE_integer("tokens_per_image", 256, "Tokens per image.")
_EMB = flags.DEFINE_integer("embed_dim", 1024, "Reference embedding width.")
_KIND = flags.DEFINE_enum("kind", "cascade", ["cascade", "pair"], "What is evaluated.")
_CHUNK = flags.DEFINE_integer("chunk_tokens", 4096, "Tokens per chunk.")
_HMS_PARENTS = flags.DEFINE_integer("hms_parents", 10000, "Parents in the stand-alone HMS timing.")
_OUT = flags.DEFINE_string("out", "", "Optional JSON file for the figures.")


class SyntheticSource:
  """Activations generated chunk by chunk (bounded memory, like a store read)."""

  def __init__(self, n_tokens, d, tokens_per_image, embed_dim):
    self.d, self.num_tokens = d, n_tokens
    self.num_images = -(-n_tokens // tokens_per_image)
    self.token_offsets = np.minimum(np.arange(self.num_images + 1, dtype=np.int64)
                                    * tokens_per_image, n_tokens)
    self.has_embeddings = True
    self.labels = np.zeros(self.num_images, np.int64)
    self.image_ids = [str(i) for i in range(self.num_images)]
    self._emb = np.random.default_rng(1).normal(size=(self.num_images, embed_dim)).astype(np.float32)
    self.name = "synthetic"

  def read_tokens(self, start, stop):
    rng = np.random.default_rng(start)
    return rng.standard_normal((stop - start, self.d), dtype=np.float32)

  def embeddings(self):
    return self._emb


def rss_gib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def main(argv):
  del argv
  d, n1, n2 = _D.value, _N1.value, _N2.value
  t0 = time.time()
  x0 = np.random.default_rng(0).standard_normal((256, d), dtype=np.float32)
  lv1 = dict(family="batchtopk", n=n1, k=_K.value, aux_k=None)
  if _KIND.value == "cascade":
    model = build_model({"name": "cascade", "d": d, "levels": [
        lv1, dict(family="batchtopk", n=n2, k=1, aux_k=None)]})
    params, state = model.init(jax.random.PRNGKey(0), x0)
    subject = subjects.from_model(model, params, state)
  else:
    m1 = build_model({"name": "batchtopk", "d": d, "options": {"n": n1, "k": _K.value,
                                                               "aux_k": None}})
    m2 = build_model({"name": "batchtopk", "d": d, "options": {"n": n2, "k": _K.value,
                                                               "aux_k": None}})
    p1, s1 = m1.init(jax.random.PRNGKey(0), x0)
    p2, s2 = m2.init(jax.random.PRNGKey(1), x0)
    subject = subjects.from_model(m1, p1, s1, model2=m2, params2=p2, state2=s2)
  src = SyntheticSource(_TOKENS.value, d, _TPI.value, _EMB.value)
  t_init = time.time() - t0
  rss_init = rss_gib()

  t1 = time.time()
  pr = codes_lib.run_pass(subject, src, codes_lib.PassOptions(chunk_tokens=_CHUNK.value))
  t_pass = time.time() - t1
  t2 = time.time()
  ev = evaluator.evaluate(subject, src, evaluator.Options(chunk_tokens=_CHUNK.value),
                          pass_result=pr)
  t_post = time.time() - t2

  rng = np.random.default_rng(2)
  r = rng.normal(size=(2 * _HMS_PARENTS.value, _EMB.value)).astype(np.float32)
  parent = rng.integers(-1, _HMS_PARENTS.value, size=len(r))
  t3 = time.time()
  h, _ = hms_lib.hms_per_parent(r, parent, _HMS_PARENTS.value)
  s = hms_lib.summarize(h)
  t_hms = time.time() - t3

  figures = {
      "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                 f"{os.cpu_count()} CPUs, jax {jax.__version__} ({jax.default_backend()})",
      "kind": _KIND.value, "tokens": src.num_tokens, "images": src.num_images, "d": d,
      "n1": n1, "n2": n2, "chunk_tokens": _CHUNK.value, "embed_dim": _EMB.value,
      "init_s": round(t_init, 2), "pass_s": round(t_pass, 2),
      "tokens_per_s": round(src.num_tokens / t_pass, 1),
      "prototypes_parents_hms_s": round(t_post, 2),
      "hms_only_parents": _HMS_PARENTS.value, "hms_only_units": len(r),
      "hms_only_s": round(t_hms, 3), "hms_only_count": s["count"],
      "rss_after_init_gib": round(rss_init, 2), "peak_rss_gib": round(rss_gib(), 2),
      "hms_mean": ev.summary["hms"]["mean"],
  }
  print(json.dumps(figures, indent=1))
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(figures, f, indent=1)


if __name__ == "__main__":
  app.run(main)
