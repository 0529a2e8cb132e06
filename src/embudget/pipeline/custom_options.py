"""The settings and the result of :func:`embudget.search_sizes`
(:mod:`embudget.pipeline.custom`): :class:`SearchOptions`, :class:`SizeSearchResult`."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from torch import nn

from embudget.budget.usage import ResolvedBudget, Usage
from embudget.errors import ConfigError
from embudget.result import Chosen, Timing

__all__ = ["CandidateResult", "ProbeRecord", "SearchOptions", "SizeSearchResult"]


@dataclass(frozen=True)
class SearchOptions:
    """Settings of :func:`search_sizes`; the defaults suit a small model on a CPU.

    Attributes:
        iterations: T, search iterations (probes) of the BET methods (bet.md §5; 50 there).
        candidates: m, actions sampled per iteration (bet.md §5; 100 there).
        pretrain_steps: Adam steps of Θ0, every row at full size (bet.md §7.1).
        probe_steps: fine-tuning steps of one probe (bet.md §6; 0 scores the truncated Θ0).
        retrain_steps: Adam steps of each retrained candidate (bet.md §7.2).
        lr: Adam learning rate of pretraining and retraining.
        probe_lr: Adam learning rate of the probes (None: ``lr``).
        eval_every: validate every this many steps while pretraining and retraining and keep
            the best weights (bet.md §7.2); 0 validates only the final weights.
        top: probes retrained after the search (bet.md §7.3; 5 there).
        retrain_init: ``scratch`` (a fresh model, bet.md §7.3) or ``shared`` (Θ0's weights,
            truncated to the candidate's sizes).
        predictor_updates, predictor_update_mode, predictor_output: the fitness predictor's
            training (bet.md §4.6; ``batch`` and ``linear`` suit short searches).
        size_step: sizes of the BET methods restricted to multiples of this (bet.md §14.3).
        max_attempts, on_exhausted: the bounded sampler's retry cap and what it does then.
        dtype, layout: the storage a byte budget counts (bet.md §14.2).
        seed: the root of every random stream (model initialisation, sampler, probes).
    """

    iterations: int = 10
    candidates: int = 20
    pretrain_steps: int = 300
    probe_steps: int = 30
    retrain_steps: int = 300
    lr: float = 0.01
    probe_lr: float | None = None
    eval_every: int = 0
    top: int = 3
    retrain_init: Literal["scratch", "shared"] = "scratch"
    predictor_updates: int = 10
    predictor_update_mode: Literal["single", "batch"] = "batch"
    predictor_output: Literal["leaky_relu", "linear"] = "linear"
    size_step: int = 1
    max_attempts: int = 100
    on_exhausted: Literal["clamp", "error"] = "clamp"
    dtype: Literal["fp32", "fp16", "bf16", "int8"] = "fp32"
    layout: Literal["jagged", "bucketed"] = "jagged"
    seed: int = 0

    def __post_init__(self) -> None:
        for name, lo in (
            ("iterations", 1),
            ("candidates", 1),
            ("pretrain_steps", 0),
            ("probe_steps", 0),
            ("retrain_steps", 0),
            ("eval_every", 0),
            ("top", 1),
            ("predictor_updates", 1),
            ("size_step", 1),
            ("max_attempts", 1),
            ("seed", 0),
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"SearchOptions.{name} must be an integer >= {lo}, got {v!r}")
        for name in ("lr", "probe_lr"):
            v = getattr(self, name)
            if v is None and name == "probe_lr":
                continue
            if (
                isinstance(v, bool)
                or not isinstance(v, int | float)
                or not (math.isfinite(v) and v > 0)
            ):
                raise ConfigError(f"SearchOptions.{name} must be a finite number > 0, got {v!r}")
        for name, allowed in (
            ("retrain_init", ("scratch", "shared")),
            ("predictor_update_mode", ("single", "batch")),
            ("predictor_output", ("leaky_relu", "linear")),
            ("on_exhausted", ("clamp", "error")),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"SearchOptions.{name} must be one of {allowed}")


@dataclass(frozen=True)
class ProbeRecord:
    """One search iteration: its index, the measured fitness Q / Q0 and the quality Q."""

    t: int
    fitness: float
    quality: float


@dataclass(frozen=True)
class CandidateResult:
    """A retrained candidate (``su``, ``retrain-t4`` ...) and its validation quality."""

    name: str
    valid: float


@dataclass(frozen=True)
class SizeSearchResult:
    """What :func:`search_sizes` found.

    Attributes:
        method: the method run.
        sizes: per-row sizes of every budgeted table, by table name.
        model: the kept model (trained, its tables at ``sizes``).
        valid: ``evaluate(model)``.
        budget: the resolved budget (B over all budgeted rows).
        usage: parameters and bytes the sizes use against it (for ``full``, against the
            whole table).
        budgeted: False only for the unbudgeted ``full``.
        chosen: the kept candidate and its validation quality.
        candidates: every retrained candidate, in proposal order.
        theta0_valid: ``evaluate`` of the full-size Θ0, when one was pretrained.
        probes: the search iterations (BET methods).
        timing: seconds of pretraining, search, retraining and in total.
        options: the settings used.
    """

    method: str
    sizes: dict[str, np.ndarray]
    model: nn.Module
    valid: float
    budget: ResolvedBudget
    usage: Usage
    budgeted: bool
    chosen: Chosen
    candidates: tuple[CandidateResult, ...]
    theta0_valid: float | None
    probes: tuple[ProbeRecord, ...]
    timing: Timing
    options: SearchOptions = field(default_factory=SearchOptions)

    @property
    def params_used(self) -> int:
        """Σ sizes over every budgeted row."""
        return self.usage.params

    @property
    def budget_met(self) -> bool:
        """Whether the sizes use at most the budget (always, for the budgeted methods)."""
        return self.usage.params <= self.budget.params

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (sizes as lists; the model is not included)."""
        return {
            "method": self.method,
            "sizes": {k: v.tolist() for k, v in self.sizes.items()},
            "valid": self.valid,
            "budgeted": self.budgeted,
            "usage": self.usage.to_dict(),
            "chosen": dataclasses.asdict(self.chosen),
            "candidates": [dataclasses.asdict(c) for c in self.candidates],
            "theta0_valid": self.theta0_valid,
            "probes": [dataclasses.asdict(p) for p in self.probes],
            "timing": dataclasses.asdict(self.timing),
            "options": dataclasses.asdict(self.options),
        }
