"""A flat baseline SAE of the paper's tables at the paper's sizes (paper E.1, E.5; SPEC 2, 3).

The argument is "family,size": family one of relu, topk, batchtopk, jumprelu, gated, pannealing
(every family whose SPEC declares paper_options, csae_jax/families); size l1 (n = 20000) or l2
(n = 10000). The paper trains every flat family twice, once per level size, and links the two
post hoc; k-sparse families use the release's k of that level (k1 = 6, k2 = 1) and their declared
options (AuxK 512 for the top-k families). 1024 tokens per batch, 500M tokens.

  python -m launch.train --config=configs/baseline.py:topk,l1 --workdir=runs/topk_l1 \
      --config.data.path=stores/qwen3vl_imagenet_train
  python -m launch.train --config=configs/baseline.py:topk,l2 --workdir=runs/topk_l2 \
      --config.data.path=stores/qwen3vl_imagenet_train

d is 1024 (Qwen3-VL-4B); Gemma-3 / LLaVA stores: add --config.model.d=1152 / 5120 (checked
against the store). Expected: the paper's Table 1 row of that family after 500M tokens; not
reproduced here (needs the real store; the planted grid of every family:
configs/experiments_planted.py).
"""
from configs import common


def get_config(arg: str = "batchtopk,l1"):
  from csae_jax import families   # the family module declares its paper options (SPEC)
  family, _, size = (arg or "batchtopk,l1").partition(",")
  family, size = family.strip(), (size.strip() or "l1")
  known = sorted(n for n in families.names() if families.spec(n).paper_options is not None)
  if family not in known:
    raise ValueError(f"configs/baseline.py:FAMILY,SIZE: no paper baseline for family {family!r}; "
                     f"one of {known}")
  if size not in common.PAPER_N:
    raise ValueError(f"configs/baseline.py:FAMILY,SIZE: size must be 'l1' (n=20000) or 'l2' "
                     f"(n=10000), got {size!r}")
  c = common.base_config()
  c.model.name = family
  c.model.d = common.QWEN3VL_D
  spec = families.spec(family)
  options = {"n": common.PAPER_N[size], **spec.paper_options}
  if spec.k_sparse:
    options["k"] = common.PAPER_K[size]
  c.model.options = options
  common.paper_run(c)
  return c
