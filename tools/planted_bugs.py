r"""Re-plant issue 10's 13 surviving bugs (20 variants) one at a time; each must fail its test.

  JAX_PLATFORMS=cpu .venv/bin/python -m tools.planted_bugs

The named tests must first pass on the unmodified code. Each bug is then an exact string
replacement applied in a private copy of the repository (as tools/mutate.py does); the named test
runs; the copy is restored. Prints CAUGHT / SURVIVED per bug
and exits 1 if any survived or a replacement no longer matches the source (then update the list).
GAPS are the six real mutation-testing survivors of docs/mutation.md, planted the same way
(`--set=gaps` runs only those, `--set=bugs` only the 13 bugs).
"""
import os
import shutil
import tempfile

from absl import app
from absl import flags

from tools import mutate

S, E = "tests/bridge_torch/test_steering_exact.py", "tests/test_step.py::"
BUGS = [
    ("bridge_torch/steering.py", "post[:, atoms] = self.clamp.value",
     "post[:, atoms] += self.clamp.value", S),
    ("bridge_torch/experiment.py", "sign * cfg.scale_mult * sigma)", "sign * cfg.scale_mult)", S),
    ("csae_jax/conventions.py", "optax.chain(project_decoder_grads(mask_fn), ", "optax.chain(",
     E + "test_two_steps_equal_float64_project_clip_adam_renormalise"),
    ("csae_jax/step.py", "model.decoder_mask, b1",
     "lambda p: jax.tree_util.tree_map(lambda _: False, p), b1",
     E + "test_two_steps_equal_float64_project_clip_adam_renormalise"),
    ("csae_jax/families/topk.py", "f, z = encode_with_k(p, xx, k)",
     "f, z = encode_with_k(p, xx, cfg.k)", E + "test_topk_loss_uses_the_annealed_k"),
    ("csae_jax/families/topk.py", "sparse.loss_by_path(params, x, target, cfg, k, row_mask",
     "sparse.loss_by_path(params, x, target, cfg, cfg.k, row_mask",
     E + "test_topk_loss_uses_the_annealed_k"),
    ("csae_jax/ops.py", "lax.fori_loop(0, 31, body", "lax.fori_loop(0, 30, body",
     "tests/test_ops.py::test_selection_exact_over_many_seeds_with_ties_and_zeros"),
    ("csae_jax/ops.py", "exact = ~jnp.any(row_min_bits >= t)", "exact = ~jnp.any(row_min_bits > t)",
     "tests/test_ops.py::test_candidate_selection_with_a_tied_row_beyond_its_cap"),
    ("csae_jax/store/reader.py", '(("token_offsets", self.token_offsets), ("labels", self.labels))',
     '(("labels", self.labels),)', "tests/test_store.py::test_verify_checks_offsets_labels_and_embeddings"),
    ("csae_jax/store/reader.py", '(("token_offsets", self.token_offsets), ("labels", self.labels))',
     '(("token_offsets", self.token_offsets),)',
     "tests/test_store.py::test_verify_checks_offsets_labels_and_embeddings"),
    ("csae_jax/store/reader.py", "    if self._emb is not None:\n      got", "    if False:\n      got",
     "tests/test_store.py::test_verify_checks_offsets_labels_and_embeddings"),
    ("csae_jax/store/reader.py", "offsets[-1] != n_tok or np.any(np.diff(offsets) < 0)",
     "offsets[-1] != n_tok", "tests/test_store.py::test_decreasing_offsets_refused"),
    ("csae_jax/store/writer.py", "      or np.any(np.diff(offsets) < 0):", "      or False:",
     "tests/test_store.py::test_decreasing_offsets_refused"),
    ("csae_jax/evaluation/recovery.py", "contingency(true, pred).max(0).sum()",
     "contingency(true, pred).max(1).sum()", "tests/evaluation/test_recovery.py"),
    ("csae_jax/evaluation/parents.py", "  x = _unit(atoms)", "  x = np.asarray(atoms, np.float64)",
     "tests/evaluation/test_parents.py"),
    ("csae_jax/codes.py", "    a = a & row_mask[:, None]\n", "    a = a  # row mask dropped\n",
     "tests/test_conventions.py"),
    ("csae_jax/conventions.py", "    ntok = jnp.sum(row_mask, dtype=jnp.int32)",
     "    ntok = codes.shape[0]", "tests/test_conventions.py"),
    ("csae_jax/conventions.py", "return jnp.mean((tokens_since_fired >= window)",
     "return jnp.mean((tokens_since_fired > window)", "tests/test_conventions.py"),
    ("csae_jax/families/topk.py", 'dead = state["tokens_since_fired"] >= cfg.dead_tokens',
     'dead = state["tokens_since_fired"] > cfg.dead_tokens',
     "tests/families/test_families.py::test_auxk_dead_boundary_is_exactly_dead_tokens"),
    ("csae_jax/families/topk.py",
     'params["b_dec"] = cv.geometric_median(jnp.asarray(x_first, jnp.float32))',
     'params["b_dec"] = jnp.asarray(x_first, jnp.float32).mean(0)',
     "tests/families/test_families.py::test_topk_b_dec_starts_at_the_geometric_median"),
]

ST, EV = "tests/test_store.py::", "tests/evaluation/"
GAPS = [
    ("csae_jax/store/writer.py", "if f is not None and not f.closed:",
     "if f is not None or not f.closed:",
     ST + "test_writer_resumed_from_a_finished_partial_closes_and_finalizes"),
    ("csae_jax/store/writer.py", 'self._boundaries[0]["tokens"] <= self._written_tokens',
     'self._boundaries[0]["tokens"] < self._written_tokens',
     ST + "test_progress_commits_a_boundary_that_ends_exactly_on_a_chunk"),
    ("csae_jax/evaluation/experiments.py", "Model(lv1.family, lv1.cfg), p[0], s[0]",
     "Model(lv1.family, lv1.cfg), p[1], s[1]",
     EV + "test_experiments.py::test_posthoc_clustering_of_a_csae_reads_its_level_one_parameters"),
    ("csae_jax/evaluation/report.py", "if not any(m != o and summaries[m]",
     "if not any(m == o and summaries[m]",
     EV + "test_report.py::test_an_ablation_sharing_a_methods_summary_is_listed_once"),
    ("csae_jax/evaluation/subjects.py", "(vals.min(-1) > 0)", "(vals.min(-1) > 1)",
     EV + "test_codes.py::test_batch_topk_codes_overflow_of_a_row_with_values_below_one"),
    ("csae_jax/families/pannealing.py", "(mean_spn > 0)", "(mean_spn > -1)",
     "tests/families/test_families.py::test_pannealing_keeps_c_when_the_next_p_history_is_all_zero"),
]
_SET = flags.DEFINE_enum("set", "all", ["all", "bugs", "gaps"],
                         "bugs: the 13 planted bugs; gaps: the mutation-testing gaps; all: both")


def main(argv):
  del argv
  plants = {"all": BUGS + GAPS, "bugs": BUGS, "gaps": GAPS}[_SET.value]
  work = tempfile.mkdtemp(prefix="csae-planted-")
  bad = 0
  try:
    repo = mutate.copy_repo(os.getcwd(), os.path.join(work, "repo"))
    clean, _ = mutate.run_tests(repo, sorted({b[3] for b in plants}), 1800)
    if clean != "survived":                # a failure must come from the bug, not the suite
      print(f"the tests do not pass on the unmodified code ({clean}); nothing planted")
      return 1
    for path, old, new, test in plants:
      target = os.path.join(repo, path)
      src = open(target).read()
      if src.count(old) != 1:
        print(f"STALE     {path}: {old!r} found {src.count(old)} times")
        bad += 1
        continue
      try:
        with open(target, "w") as f:
          f.write(src.replace(old, new))
        status, secs = mutate.run_tests(repo, [test], 900)
      finally:
        with open(target, "w") as f:
          f.write(src)
      caught = status != "survived"
      bad += not caught
      print(f"{'CAUGHT' if caught else 'SURVIVED':9s} {secs:5.1f}s {path}: {old.strip()[:60]!r} -> "
            f"{new.strip()[:50]!r}  [{test}]", flush=True)
  finally:
    shutil.rmtree(work, ignore_errors=True)
  print(f"{len(plants) - bad} of {len(plants)} planted bugs caught")
  return 1 if bad else 0


if __name__ == "__main__":
  app.run(main)
