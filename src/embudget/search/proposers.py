"""How each method proposes size assignments to retrain (bet.md §5–§7, §9).

A method is one :class:`Proposer` subclass registered with :func:`register` under its name in
:data:`~embudget.config.choices.Method` (importing this module checks that every name has
exactly one proposer). It turns a :class:`ProposalContext` (the data, the resolved budget, Θ0
when it asked for one) into a :class:`Proposal`, the candidates the runner retrains
(:mod:`embudget.pipeline.retrain`) and chooses among on validation. The unbudgeted reference
``full`` proposes nothing and keeps Θ0 itself.

- ``full``: Θ0, the pretrained full-size model;
- ``su``: one size for every entity, ⌊B / N⌋ (uniform);
- ``sr``: random sizes repaired into the budget;
- ``bet`` / ``bet-simple`` / ``bet-random``: T probe iterations (:mod:`embudget.search.loop`)
  with the DeepSets predictor, the simple per-entity predictor, or no predictor (random
  selection); the top ``search.retrain.top`` probes become the candidates.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import numpy as np
import torch

from embudget.budget.core import random_sizes, uniform_sizes
from embudget.budget.usage import ResolvedBudget
from embudget.config import Method, RunConfig, choices
from embudget.data.dataset import Dataset
from embudget.errors import ConfigError
from embudget.io import RunDir
from embudget.models.base import Backbone
from embudget.search.actions import Action, RankAssignment
from embudget.search.loop import Searcher, ranked, search
from embudget.search.predictor import DeepSetsPredictor, FitnessPredictor, SimplePredictor
from embudget.seeds import np_rng, torch_generator


@dataclass(frozen=True)
class Candidate:
    """A size assignment to retrain, named for its files (``su``, ``retrain-t12`` ...)."""

    name: str
    user_sizes: np.ndarray
    item_sizes: np.ndarray


@dataclass(frozen=True)
class Proposal:
    """The candidates of one method, the probes it ran and the seconds it searched."""

    candidates: tuple[Candidate, ...]
    n_probes: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class ProposalContext:
    """What a proposer may use.

    Attributes:
        budget: the resolved budget; candidates fit ``budget.per_entity`` (one table's sizes).
        theta0: Θ0's weights when the proposer's ``needs_theta0`` (else possibly None).
        new_model: a fresh backbone on the run's device, initialised from the named stream.
        run, resume, progress: the run directory for state files, whether to resume from
            them, whether to show progress bars.
    """

    cfg: RunConfig
    dataset: Dataset
    budget: ResolvedBudget
    assignment: RankAssignment
    theta0: dict[str, torch.Tensor] | None
    new_model: Callable[[str], Backbone]
    run: RunDir
    resume: bool
    progress: bool


class Proposer(ABC):
    """One method. ``budgeted``: False for the unbudgeted reference (Θ0 is the result, no
    candidates); ``needs_theta0``: the proposal itself needs the pretrained model."""

    method: ClassVar[Method]
    budgeted: ClassVar[bool] = True
    needs_theta0: ClassVar[bool] = False

    @abstractmethod
    def propose(self, ctx: ProposalContext) -> Proposal:
        """The candidates to retrain (empty for an unbudgeted proposer)."""


PROPOSERS: dict[str, type[Proposer]] = {}
P = TypeVar("P", bound=type[Proposer])


def register(cls: P) -> P:
    """Make ``cls`` the proposer of ``cls.method`` (``search.method`` in the config)."""
    if cls.method in PROPOSERS:
        raise TypeError(f"{cls.__name__}: method {cls.method!r} already has a proposer")
    PROPOSERS[cls.method] = cls
    return cls


def proposer_for(method: str) -> Proposer:
    """The registered proposer of ``method``.

    Raises:
        ConfigError: no proposer is registered under that name.
    """
    if method not in PROPOSERS:
        known = ", ".join(choices(Method))
        raise ConfigError(f"unknown search.method {method!r}; choose from {known}")
    return PROPOSERS[method]()


@register
class Full(Proposer):
    """Θ0 itself: the unbudgeted reference."""

    method = "full"
    budgeted = False
    needs_theta0 = True

    def propose(self, ctx: ProposalContext) -> Proposal:
        return Proposal(())


@register
class Uniform(Proposer):
    """SU: d_n = min(d_max, ⌊B / N⌋) for every entity (bet.md §9)."""

    method = "su"

    def propose(self, ctx: ProposalContext) -> Proposal:
        b = ctx.budget
        us, vs = uniform_sizes(b.n_users, b.n_items, b.per_entity, b.d_max)
        return Proposal((Candidate("su", us, vs),))


@register
class RandomSizes(Proposer):
    """SR: random sizes in proportion to uniform draws, repaired into the budget (bet.md §9)."""

    method = "sr"

    def propose(self, ctx: ProposalContext) -> Proposal:
        b = ctx.budget
        rng = np_rng(ctx.cfg.seed, "sr-sizes")
        us, vs = random_sizes(b.n_users, b.n_items, b.per_entity, b.d_max, rng)
        return Proposal((Candidate("sr", us, vs),))


@register
class Bet(Proposer):
    """BET: probes selected by the DeepSets fitness predictor (bet.md §5–§6)."""

    method: ClassVar[Method] = "bet"  # typed as Method: BetRandom and BetSimple override it
    needs_theta0 = True
    random_select: ClassVar[bool] = False

    def predictor(self, ctx: ProposalContext) -> FitnessPredictor | None:
        """The fitness predictor, initialised from the ``predictor-init`` stream."""
        cfg, ds = ctx.cfg, ctx.dataset
        linear = cfg.search.predictor.output == "linear"
        gen = torch_generator(cfg.seed, "predictor-init")
        return DeepSetsPredictor.from_freqs(
            ds.user_freq, ds.item_freq, cfg.model.d_max, gen, linear
        )

    def propose(self, ctx: ProposalContext) -> Proposal:
        assert ctx.theta0 is not None
        searcher = Searcher(
            ctx.cfg,
            ctx.dataset,
            ctx.new_model("probe"),
            ctx.theta0,
            ctx.assignment,
            ctx.budget.per_entity,
            self.predictor(ctx),
            self.random_select,
        )
        outcome = search(searcher, ctx.run, ctx.resume, ctx.progress)
        candidates = []
        for p in ranked(outcome.population)[: ctx.cfg.search.retrain.top]:
            us, vs = ctx.assignment.sizes(Action.from_dict(p["action"]))
            candidates.append(Candidate(f"retrain-t{p['t']}", us, vs))
        return Proposal(tuple(candidates), len(outcome.population), outcome.seconds)


@register
class BetRandom(Bet):
    """BET-random: every probe selected at random, no predictor (bet.md §9)."""

    method = "bet-random"
    random_select = True

    def predictor(self, ctx: ProposalContext) -> FitnessPredictor | None:
        return None


@register
class BetSimple(Bet):
    """BET-simple: the per-entity (non-set) predictor in place of DeepSets (bet.md §9)."""

    method = "bet-simple"

    def predictor(self, ctx: ProposalContext) -> FitnessPredictor | None:
        cfg, ds = ctx.cfg, ctx.dataset
        linear = cfg.search.predictor.output == "linear"
        gen = torch_generator(cfg.seed, "predictor-init")
        return SimplePredictor(
            ds.n_users, ds.n_items, cfg.model.d_max, generator=gen, linear_output=linear
        )


_unregistered = set(choices(Method)) ^ set(PROPOSERS)
if _unregistered:  # the config accepts exactly the methods that have a proposer
    raise TypeError(f"search.method names without a proposer, or the reverse: {_unregistered}")
