"""BET for any model: :func:`search_sizes` (``embudget.search_sizes``).

The user's model holds its embedding tables as :class:`embudget.BudgetedEmbedding`; the user
brings training batches, a loss and a validation score. :func:`search_sizes` then runs one
method at one budget the way :func:`embudget.pipeline.run.run_search` does for the built-in
backbones (bet.md §5–§7, §9):

- ``full``: Θ0, the model pretrained with every row at full size (unbudgeted reference);
- ``su`` / ``sr``: uniform or random sizes (bet.md §9), retrained;
- ``bet`` / ``bet-simple`` / ``bet-random``: Θ0 pretrained, T iterations of the shared loop
  (:func:`embudget.search.loop.search`: m sampled actions, one selected by the predictor's
  schedule, probed by fine-tuning a copy of Θ0 and evaluating it, the predictor updated), the
  top probes retrained and the best on validation kept.

Example::

    result = embudget.search_sizes(
        make_model, batches, loss, evaluate, method="bet", sparsity=0.9,
        popularity={"user_emb": user_counts, "item_emb": item_counts},
    )
    result.sizes["user_emb"], result.usage.params, result.model
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import numpy.typing as npt
from torch import nn

from embudget.budget.core import check_budget, random_sizes, uniform_sizes
from embudget.budget.usage import ResolvedBudget, Usage
from embudget.config import (
    BudgetConfig,
    ModelConfig,
    PredictorConfig,
    RunConfig,
    SamplerConfig,
    SearchConfig,
    validate,
)
from embudget.errors import ConfigError
from embudget.io import RunDir
from embudget.pipeline.custom_options import (
    CandidateResult,
    ProbeRecord,
    SearchOptions,
    SizeSearchResult,
)
from embudget.result import Chosen, Timing
from embudget.search.actions import Action, RankAssignment
from embudget.search.custom import ModelSearcher, Sides, TableLayout, budgeted_tables
from embudget.search.loop import STATE_FILE, ranked, search
from embudget.search.predictor import DeepSetsPredictor, FitnessPredictor, SimplePredictor
from embudget.search.proposers import Bet, BetRandom, BetSimple, proposer_for
from embudget.search.sampler import BoundedSampler
from embudget.seeds import np_rng, torch_generator
from embudget.training.custom import Batches, EvaluateFn, LossFn, measure, seeded, train_steps

log = logging.getLogger(__name__)

__all__ = [
    "CandidateResult",
    "ProbeRecord",
    "SearchOptions",
    "SizeSearchResult",
    "search_sizes",
]

#: A model to search sizes for: a module (each fresh model is a deep copy of it) or a function
#: returning a new one (called under a seeded torch generator, one stream per model).
ModelSource = nn.Module | Callable[[], nn.Module]


def _fresh(source: ModelSource, seed: int, stream: str) -> nn.Module:
    if isinstance(source, nn.Module):
        return copy.deepcopy(source)
    with seeded(None, seed, "init", stream):
        model = source()
    if not isinstance(model, nn.Module):
        raise ConfigError(f"the model factory must return an nn.Module, got {type(model).__name__}")
    return model


def _dense_params(model: nn.Module) -> int:
    tables = {id(p) for _, t in budgeted_tables(model) for p in t.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in tables)


def _loop_config(
    method: str, options: SearchOptions, budget: BudgetConfig, d_max: int
) -> RunConfig:
    """The shared loop's settings (its state is keyed by this config's hash)."""
    o = options
    base = RunConfig()
    search_cfg = dataclasses.replace(
        SearchConfig(),
        method=method,  # type: ignore[arg-type]  # checked by proposer_for
        iterations=o.iterations,
        sampler=SamplerConfig(
            candidates=o.candidates,
            max_attempts=o.max_attempts,
            on_exhausted=o.on_exhausted,
            size_step=o.size_step,
        ),
        predictor=PredictorConfig(
            updates=o.predictor_updates,
            update_mode=o.predictor_update_mode,
            output=o.predictor_output,
        ),
    )
    cfg = dataclasses.replace(
        base,
        seed=o.seed,
        model=dataclasses.replace(ModelConfig(), d_max=d_max),
        budget=budget,
        search=search_cfg,
    )
    return validate(cfg)


def search_sizes(
    model: ModelSource,
    batches: Batches,
    loss: LossFn,
    evaluate: EvaluateFn,
    *,
    method: str = "bet",
    sparsity: float | None = None,
    params: int | None = None,
    bytes: int | None = None,  # named like the config key
    popularity: Mapping[str, npt.ArrayLike] | None = None,
    sides: Sides | None = None,
    options: SearchOptions | None = None,
    out: str | Path | None = None,
) -> SizeSearchResult:
    """Per-row embedding sizes for ``model``'s budgeted tables under a budget, and the model
    trained at them.

    Args:
        model: an ``nn.Module`` whose tables to budget are :class:`embudget.BudgetedEmbedding`
            (same ``embedding_dim``), or a function returning a new one.
        batches: training batches (see :data:`embudget.training.custom.Batches`).
        loss: ``loss(model, batch)``, a scalar tensor to minimise.
        evaluate: ``evaluate(model)``, the validation quality (higher is better, > 0 for Θ0).
        method: ``bet``, ``bet-simple``, ``bet-random``, ``su``, ``sr`` or ``full``.
        sparsity, params, bytes: the budget, exactly one (over every budgeted row).
        popularity: per table name, a count per row (e.g. training occurrences); required by
            the BET methods (larger sizes go to more popular rows, bet.md §3.3).
        sides: which tables form the sampler's user side and item side (default: the first
            table, and the rest; see :mod:`embudget.search.custom`).
        options: :class:`SearchOptions` (defaults for small models).
        out: a directory for the search's ``history.jsonl`` (one line per iteration); without
            it the loop's per-iteration files live in a temporary directory, removed on return.

    Raises:
        ConfigError: an unknown method, no budgeted table, missing popularity for a BET method,
            a one-table model for a BET method, bad options, a loss or evaluation that does not
            return what it should.
        BudgetError: no budget or several (INVALID), or a budget too small to give every row
            one dimension (INFEASIBLE), before any training.
    """
    t_start = time.perf_counter()
    o = options if options is not None else SearchOptions()
    if not isinstance(o, SearchOptions):
        raise ConfigError(f"options must be a SearchOptions, got {type(o).__name__}")
    proposer = proposer_for(method)
    bet = isinstance(proposer, Bet)
    if not bet and method not in ("su", "sr", "full"):
        raise ConfigError(f"method {method!r} is not supported by search_sizes")
    layout = TableLayout.of(_fresh(model, o.seed, "layout"), sides)
    budget = ResolvedBudget.resolve(
        sparsity=sparsity,
        params=params,
        bytes=bytes,
        dtype=o.dtype,
        layout=o.layout,
        n_users=layout.n_users,
        n_items=layout.n_items,
        d_max=layout.d_max,
        size_step=o.size_step if bet else 1,
    )
    if proposer.budgeted:
        budget.check_feasible()
    counts: tuple[np.ndarray, np.ndarray] | None = None
    if bet:
        if popularity is None:
            raise ConfigError(
                f"method {method} assigns sizes by row popularity (bet.md §3.3): pass "
                f"popularity={{table name: counts per row}} for the tables {list(layout.names)}"
            )
        if not layout.sides[1]:
            raise ConfigError(
                f"method {method} needs two groups of rows (the sampler splits the budget "
                f"between them, bet.md §3.2), but the model has one budgeted table "
                f"{list(layout.names)}; use su or sr, or budget two tables"
            )
        counts = layout.counts(popularity)
    cfg = _loop_config(
        method,
        o,
        BudgetConfig(sparsity=sparsity, params=params, bytes=bytes, dtype=o.dtype, layout=o.layout),
        layout.d_max,
    )

    theta0: nn.Module | None = None
    theta0_valid: float | None = None
    t_pre = 0.0
    if proposer.needs_theta0 or (o.retrain_init == "shared" and proposer.budgeted):
        t0 = time.perf_counter()
        theta0 = _fresh(model, o.seed, "pretrain")
        layout.apply(theta0, None)
        out_pre = train_steps(
            theta0,
            batches,
            loss,
            steps=o.pretrain_steps,
            lr=o.lr,
            seed=o.seed,
            stream="pretrain",
            evaluate=evaluate,
            eval_every=o.eval_every,
        )
        theta0_valid = out_pre.quality if out_pre.quality is not None else measure(theta0, evaluate)
        t_pre = time.perf_counter() - t0
        log.info("pretrained the full-size model: valid %.4f (%.1fs)", theta0_valid, t_pre)

    probes: tuple[ProbeRecord, ...] = ()
    t_search = 0.0
    names_sizes: list[tuple[str, np.ndarray, np.ndarray]] = []
    nu, nv = layout.n_users, layout.n_items
    if method == "su":
        names_sizes.append(("su", *uniform_sizes(nu, nv, budget.per_entity, layout.d_max)))
    elif method == "sr":
        rng = np_rng(o.seed, "sr-sizes")
        names_sizes.append(("sr", *random_sizes(nu, nv, budget.per_entity, layout.d_max, rng)))
    elif isinstance(proposer, Bet):
        assert theta0 is not None and theta0_valid is not None and counts is not None
        assignment = RankAssignment(*counts)
        searcher = ModelSearcher(
            cfg,
            BoundedSampler(
                nu,
                nv,
                budget.per_entity,
                d_max=layout.d_max,
                max_attempts=o.max_attempts,
                on_exhausted=o.on_exhausted,
                size_step=o.size_step,
            ),
            assignment,
            _predictor(proposer, counts, layout.d_max, o),
            isinstance(proposer, BetRandom),
            theta0=theta0,
            layout=layout,
            batches=batches,
            loss=loss,
            evaluate=evaluate,
            steps=o.probe_steps,
            lr=o.lr if o.probe_lr is None else o.probe_lr,
            q0=theta0_valid,
        )
        with ExitStack() as stack:
            if out is None:
                folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            else:
                folder = Path(out)
                folder.mkdir(parents=True, exist_ok=True)
            run = RunDir(folder)
            outcome = search(searcher, run, resume=False, progress=False)
            run.file(STATE_FILE).unlink(missing_ok=True)
        t_search = outcome.seconds
        probes = tuple(ProbeRecord(p["t"], p["fitness"], p["quality"]) for p in outcome.population)
        for p in ranked(outcome.population)[: o.top]:
            us, vs = assignment.sizes(Action.from_dict(p["action"]))
            names_sizes.append((f"retrain-t{p['t']}", us, vs))

    t_re = time.perf_counter()
    if proposer.budgeted:
        kept, valid, chosen, candidates = _retrain(
            model, theta0, layout, names_sizes, budget, batches, loss, evaluate, o
        )
    else:  # Θ0 itself, the unbudgeted reference
        assert theta0 is not None and theta0_valid is not None
        kept, valid, chosen, candidates = theta0, theta0_valid, Chosen("full", theta0_valid), ()
    t_retrain = time.perf_counter() - t_re if proposer.budgeted else 0.0

    sizes = layout.read(kept)
    us, vs = layout.side_sizes(sizes)
    if proposer.budgeted:
        check_budget(us, vs, budget.per_entity, layout.d_max)
    usage = Usage.of_sizes(
        us,
        vs,
        dense_params=_dense_params(kept),
        budget=budget if proposer.budgeted else budget.unbudgeted(),
    )
    return SizeSearchResult(
        method=method,
        sizes=sizes,
        model=kept,
        valid=valid,
        budget=budget,
        usage=usage,
        budgeted=proposer.budgeted,
        chosen=chosen,
        candidates=candidates,
        theta0_valid=theta0_valid,
        probes=probes,
        timing=Timing.measured(t_start, pretrain=t_pre, search=t_search, retrain=t_retrain),
        options=o,
    )


def _predictor(
    proposer: Bet, counts: tuple[np.ndarray, np.ndarray], d_max: int, o: SearchOptions
) -> FitnessPredictor | None:
    """The method's fitness predictor, initialised from the ``predictor-init`` stream (the
    built-in methods' choice: DeepSets, the simple one for bet-simple, none for bet-random)."""
    if isinstance(proposer, BetRandom):
        return None
    linear = o.predictor_output == "linear"
    gen = torch_generator(o.seed, "predictor-init")
    if isinstance(proposer, BetSimple):
        n_u, n_v = counts[0].size, counts[1].size
        return SimplePredictor(n_u, n_v, d_max, generator=gen, linear_output=linear)
    return DeepSetsPredictor.from_freqs(counts[0], counts[1], d_max, gen, linear)


def _retrain(
    source: ModelSource,
    theta0: nn.Module | None,
    layout: TableLayout,
    names_sizes: list[tuple[str, np.ndarray, np.ndarray]],
    budget: ResolvedBudget,
    batches: Batches,
    loss: LossFn,
    evaluate: EvaluateFn,
    o: SearchOptions,
) -> tuple[nn.Module, float, Chosen, tuple[CandidateResult, ...]]:
    """Train every candidate at its sizes; keep the best on validation, the first on a tie
    (bet.md §7.3)."""
    best: tuple[float, str, nn.Module] | None = None
    results = []
    for name, us, vs in names_sizes:
        check_budget(us, vs, budget.per_entity, layout.d_max)
        if o.retrain_init == "shared":
            assert theta0 is not None
            m = copy.deepcopy(theta0)
        else:
            m = _fresh(source, o.seed, name)
        layout.apply(m, layout.table_sizes(us, vs))
        tr = train_steps(
            m,
            batches,
            loss,
            steps=o.retrain_steps,
            lr=o.lr,
            seed=o.seed,
            stream=name,
            evaluate=evaluate,
            eval_every=o.eval_every,
        )
        q = tr.quality if tr.quality is not None else measure(m, evaluate)
        results.append(CandidateResult(name, q))
        log.info("retrained %s: valid %.4f (%.1fs)", name, q, tr.seconds)
        if best is None or q > best[0]:
            best = (q, name, m)
    assert best is not None
    q, name, m = best
    return m, q, Chosen(name, q), tuple(results)
