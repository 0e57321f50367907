"""Hierarchy evaluation (SPEC section 4): parents, prototypes, HMS, recovery, reports, browser."""
from csae_jax.evaluation.codes import PassOptions, run_pass, top_images
from csae_jax.evaluation.evaluator import Evaluation, Options, evaluate
from csae_jax.evaluation.hms import hms_levels, hms_per_parent, minmax_weights, prototypes, summarize
from csae_jax.evaluation.parents import cluster_atoms, coactivation_parents
from csae_jax.evaluation.recovery import adjusted_rand_index, purity, score_recovery
from csae_jax.evaluation.sources import ArraySource, check_source, planted_sources
from csae_jax.evaluation.subjects import Subject, from_model

__all__ = ["PassOptions", "run_pass", "top_images", "Evaluation", "Options", "evaluate",
           "hms_levels", "hms_per_parent", "minmax_weights", "prototypes", "summarize",
           "cluster_atoms", "coactivation_parents", "adjusted_rand_index", "purity", "score_recovery",
           "ArraySource", "check_source", "planted_sources", "Subject", "from_model"]
