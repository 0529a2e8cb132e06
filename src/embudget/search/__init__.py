"""Action search: the canonical action form, the rank assignment and the bounded sampler."""

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
