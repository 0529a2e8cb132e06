"""Size search (bet.md §3–§6): actions and their rank assignment (:mod:`~.actions`), the bounded
sampler (:mod:`~.sampler`), fitness predictors (:mod:`~.predictor`), the T iterations
(:mod:`~.loop`), nested pretraining's truncations (:mod:`~.nested`) and each method's proposer
(:mod:`~.proposers`). The package exports the action form and the sampler."""

from embudget.search.actions import Action, RankAssignment, rank_order
from embudget.search.sampler import BETA_MAX, FAMILIES, BoundedSampler, SampleBatch, draw_family

__all__ = [
    "BETA_MAX",
    "FAMILIES",
    "Action",
    "BoundedSampler",
    "RankAssignment",
    "SampleBatch",
    "draw_family",
    "rank_order",
]
