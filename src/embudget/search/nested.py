"""Nested (weight-sharing) pretraining for fast mode (beyond bet.md, which pretrains at full
size only, §6).

Every pretraining step trains one truncation drawn the way the search will draw them: a kept
fraction k, log-uniform in [k_min, 1], gives a budget; the bounded sampler draws an action at
that budget; sizes go to entities by frequency rank (bet.md §3.2–3.3). Over many steps every
prefix of every row is trained to be useful on its own, so an action's quality can be read off
the shared weights with few or no fine-tuning steps, for any budget down to k_min. One Θ0
serves every budget of a sweep.
"""

from __future__ import annotations

import math

import numpy as np

from embudget.search.actions import RankAssignment
from embudget.search.sampler import BoundedSampler
from embudget.seeds import np_rng


class NestedSizes:
    """``step -> (user_sizes, item_sizes)``, a pure function of (seed, step).

    Args:
        assignment: the dataset's frequency-rank assignment.
        d_max: the largest size.
        kept_min: the smallest kept fraction trained for (k ~ log-uniform [kept_min, 1]).
        seed: root seed; step t draws from the stream ``(seed, "nested", t)``.
        size_step: sizes are multiples of this (bet.md §14.3).
    """

    def __init__(
        self,
        assignment: RankAssignment,
        d_max: int,
        kept_min: float,
        seed: int,
        size_step: int = 1,
    ) -> None:
        self.assignment = assignment
        self.d_max, self.seed, self.size_step = int(d_max), int(seed), int(size_step)
        self.n = assignment.n_users + assignment.n_items
        # the smallest kept fraction the sampler can honour: every entity at size_step
        self.log_lo = math.log(max(float(kept_min), self.size_step / self.d_max))

    def kept_fraction(self, rng: np.random.Generator) -> float:
        return math.exp(rng.uniform(self.log_lo, 0.0))

    def __call__(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np_rng(self.seed, "nested", step)
        budget = math.floor(self.kept_fraction(rng) * self.d_max * self.n)
        budget = max(budget, self.size_step * self.n)
        sampler = BoundedSampler(
            self.assignment.n_users,
            self.assignment.n_items,
            budget,
            d_max=self.d_max,
            size_step=self.size_step,
        )
        return self.assignment.sizes(sampler.sample(rng))
