"""embudget.search_sizes on a tiny synthetic two-tower model: every method keeps the budget, BET
runs its T iterations and returns a model at the sizes it reports, a seed fixes the result, and
bad input ends in a typed error before any training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import embudget
from embudget.errors import BudgetError, BudgetErrorType, ConfigError
from embudget.pipeline.custom import SearchOptions, SizeSearchResult, search_sizes
from embudget.search.custom import TableLayout

N_USERS, N_ITEMS, N_TAGS, D = 30, 20, 6, 8
METHODS = ("bet", "bet-simple", "bet-random", "su", "sr", "full")
TINY = SearchOptions(
    iterations=3, candidates=4, pretrain_steps=20, probe_steps=3, retrain_steps=10, top=2
)


def _pairs(seed: int = 0) -> np.ndarray:
    g = np.random.default_rng(seed)
    users = g.integers(0, N_USERS, 300)
    items = (users * 7 + g.integers(0, 3, 300)) % N_ITEMS  # learnable structure
    return np.stack([users, items], 1)


PAIRS = _pairs()
POPULARITY = {
    "user": np.bincount(PAIRS[:, 0], minlength=N_USERS),
    "item": np.bincount(PAIRS[:, 1], minlength=N_ITEMS),
}


class Tiny(nn.Module):
    """A user table, an item table and a dense layer on top."""

    def __init__(self) -> None:
        super().__init__()
        self.user = embudget.BudgetedEmbedding(N_USERS, D)
        self.item = embudget.BudgetedEmbedding(N_ITEMS, D)
        self.proj = nn.Linear(D, D)

    def forward(self, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return (self.proj(self.user(u)) * self.item(i)).sum(-1)


class WithTags(Tiny):
    """Three budgeted tables: the item side holds items and tags."""

    def __init__(self) -> None:
        super().__init__()
        self.tag = embudget.BudgetedEmbedding(N_TAGS, D)

    def forward(self, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return super().forward(u, i) + (self.user(u) * self.tag(i % N_TAGS)).sum(-1)


BATCHES = [torch.from_numpy(PAIRS[i : i + 50]) for i in range(0, len(PAIRS), 50)]


def loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    u, i = batch[:, 0], batch[:, 1]
    neg = torch.randint(0, N_ITEMS, i.shape)  # from the generator search_sizes seeds
    return F.softplus(model(u, neg) - model(u, i)).mean()


def evaluate(model: nn.Module) -> float:
    u, i = torch.from_numpy(PAIRS[:100, 0]), torch.from_numpy(PAIRS[:100, 1])
    neg = (i + 5) % N_ITEMS
    return float((model(u, i) > model(u, neg)).float().mean()) + 0.01  # > 0 for Θ0


def run(method: str = "bet", **kwargs: object) -> SizeSearchResult:
    args: dict[str, object] = {
        "method": method,
        "sparsity": 0.7,
        "popularity": POPULARITY,
        "options": TINY,
    }
    args.update(kwargs)
    return search_sizes(Tiny, BATCHES, loss, evaluate, **args)  # type: ignore[arg-type]


def _check_sizes(result: SizeSearchResult) -> None:
    """The returned model's tables hold the returned sizes, and params_used counts them."""
    total = 0
    for name, sizes in result.sizes.items():
        table = result.model.get_submodule(name)
        assert isinstance(table, embudget.BudgetedEmbedding)
        assert np.array_equal(table.sizes.numpy(), sizes)
        assert table.params_used() == int(sizes.sum())
        total += int(sizes.sum())
    assert result.params_used == total


@pytest.mark.parametrize("method", METHODS)
def test_every_method_keeps_the_budget(method: str) -> None:
    result = run(method)
    _check_sizes(result)
    assert result.method == method
    assert result.budget.params == int(0.3 * D * (N_USERS + N_ITEMS))
    if method == "full":
        assert not result.budgeted and result.params_used == D * (N_USERS + N_ITEMS)
    else:
        assert result.budgeted and result.budget_met
        assert result.params_used <= result.budget.params
        assert result.usage.params_slack is not None and result.usage.params_slack >= 0
        assert all(1 <= int(s.min()) and int(s.max()) <= D for s in result.sizes.values())
    assert 0.0 < result.valid <= 1.01
    assert result.usage.dense_params == D * D + D  # the projection, never in the budget


def test_bet_runs_its_iterations_and_retrains_the_top(tmp_path: Path) -> None:
    result = run("bet", out=tmp_path)
    assert [p.t for p in result.probes] == list(range(TINY.iterations))
    assert all(p.fitness > 0 for p in result.probes)
    assert len(result.candidates) == TINY.top
    assert result.chosen.name == max(result.candidates, key=lambda c: c.valid).name
    assert result.theta0_valid is not None
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    assert len(lines) == TINY.iterations
    assert not (tmp_path / "search_state.pt").exists()
    # larger sizes go to more popular rows (bet.md §3.3)
    for name in ("user", "item"):
        order = np.argsort(-POPULARITY[name], kind="stable")
        assert np.all(np.diff(result.sizes[name][order]) <= 0)
    _check_sizes(result)
    assert result.to_dict()["method"] == "bet"


def test_same_seed_same_sizes() -> None:
    a, b = run("bet"), run("bet")
    assert all(np.array_equal(a.sizes[n], b.sizes[n]) for n in a.sizes)
    assert [p.fitness for p in a.probes] == [p.fitness for p in b.probes]
    assert a.valid == b.valid
    c = run("sr", options=TINY)
    d = run("sr", options=SearchOptions(**{**TINY.__dict__, "seed": 5}))
    assert not all(np.array_equal(c.sizes[n], d.sizes[n]) for n in c.sizes)


def test_three_tables_on_two_sides() -> None:
    pop = {**POPULARITY, "tag": np.arange(N_TAGS)}
    result = search_sizes(
        WithTags, BATCHES, loss, evaluate, method="bet", params=150, popularity=pop, options=TINY
    )
    _check_sizes(result)
    assert set(result.sizes) == {"user", "item", "tag"}
    assert result.params_used <= 150 == result.budget.params
    layout = TableLayout.of(WithTags(), (["user", "tag"], ["item"]))
    assert (layout.n_users, layout.n_items) == (N_USERS + N_TAGS, N_ITEMS)


def test_a_module_instance_and_a_byte_budget() -> None:
    result = search_sizes(Tiny(), BATCHES, loss, evaluate, method="su", bytes=2_000, options=TINY)
    assert result.usage.bytes <= 2_000 and result.budget.bytes == 2_000
    _check_sizes(result)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(("bet", "bet-random", "su", "sr")),
    params=st.integers(N_USERS + N_ITEMS, D * (N_USERS + N_ITEMS) + 40),
)
def test_budget_never_exceeded(method: str, params: int) -> None:
    quick = SearchOptions(
        iterations=2, candidates=3, pretrain_steps=2, probe_steps=1, retrain_steps=2, top=1
    )
    result = run(method, sparsity=None, params=params, options=quick)
    assert result.params_used <= params
    _check_sizes(result)


def test_bet_needs_popularity() -> None:
    with pytest.raises(ConfigError, match="popularity"):
        run("bet", popularity=None)
    with pytest.raises(ConfigError, match="missing"):
        run("bet", popularity={"user": POPULARITY["user"]})
    with pytest.raises(ConfigError, match="one per row"):
        run("bet", popularity={**POPULARITY, "item": np.ones(3)})
    run("su", popularity=None)  # the baselines do not need it


def test_impossible_budget() -> None:
    with pytest.raises(BudgetError) as e:
        run("bet", sparsity=None, params=N_USERS + N_ITEMS - 1)
    assert e.value.error_type is BudgetErrorType.INFEASIBLE
    with pytest.raises(BudgetError) as e:
        run("su", sparsity=0.5, params=100)
    assert e.value.error_type is BudgetErrorType.INVALID
    with pytest.raises(BudgetError):
        run("su", sparsity=None)


def test_unknown_method_and_bad_options() -> None:
    with pytest.raises(ConfigError, match="unknown search.method"):
        run("bett")
    with pytest.raises(ConfigError, match="iterations"):
        SearchOptions(iterations=0)
    with pytest.raises(ConfigError, match="lr"):
        SearchOptions(lr=float("nan"))


def test_a_model_without_budgeted_tables() -> None:
    with pytest.raises(ConfigError, match="no embudget.BudgetedEmbedding"):
        search_sizes(lambda: nn.Linear(3, 3), BATCHES, loss, evaluate, method="su", sparsity=0.5)


def test_one_table_supports_the_baselines_only() -> None:
    class One(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.user = embudget.BudgetedEmbedding(N_USERS, D)

        def forward(self, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
            return self.user(u).sum(-1) * 0 + self.user(i % N_USERS)[:, 0]

    pop = {"user": POPULARITY["user"]}
    with pytest.raises(ConfigError, match="two groups"):
        search_sizes(One, BATCHES, loss, evaluate, sparsity=0.5, popularity=pop, options=TINY)
    result = search_sizes(One, BATCHES, loss, evaluate, method="su", sparsity=0.5, options=TINY)
    assert result.params_used == N_USERS * D // 2


def test_bad_loss_and_evaluation() -> None:
    with pytest.raises(ConfigError, match="scalar tensor"):
        search_sizes(Tiny, BATCHES, lambda m, b: 1.0, evaluate, method="su", sparsity=0.5)  # type: ignore[arg-type,return-value]
    with pytest.raises(ConfigError, match="finite number"):
        search_sizes(Tiny, BATCHES, loss, lambda m: float("nan"), method="su", sparsity=0.5)
    with pytest.raises(ConfigError, match="positive quality"):
        search_sizes(
            Tiny, BATCHES, loss, lambda m: 0.0, sparsity=0.5, popularity=POPULARITY, options=TINY
        )
    with pytest.raises(ConfigError, match="ran out"):
        search_sizes(Tiny, iter(BATCHES), loss, evaluate, method="su", sparsity=0.5, options=TINY)
