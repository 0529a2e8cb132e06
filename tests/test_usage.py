"""The one budget count: params_used, ResolvedBudget and Usage (hand-computed and properties)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from embudget.budget.core import Budget, random_sizes, repair, uniform_sizes
from embudget.budget.storage import params_for_bytes
from embudget.budget.usage import ResolvedBudget, Usage, params_of_histograms, params_used
from embudget.config import load_config
from embudget.errors import BudgetError, BudgetErrorType
from embudget.models import build_model
from embudget.search.actions import Action
from embudget.tables.compact import CompactEmbedding
from embudget.tables.sized import SizedEmbedding

US, VS = np.array([2, 3]), np.array([4])  # 2 users, 1 item, d_max 8


def test_params_used_is_tables_times_the_sum_of_sizes() -> None:
    assert params_used(US, VS) == 9
    assert params_used(US, VS, tables=2) == 18
    assert params_used(np.zeros(0, np.int64), ()) == 0
    assert params_of_histograms([0, 1, 1, 0], [0, 0, 0, 1], tables=2) == 18  # same sizes
    for bad in (0, 1.5, True):
        with pytest.raises(BudgetError):
            params_used(US, VS, tables=bad)  # type: ignore[arg-type]
    with pytest.raises(BudgetError):
        params_used(np.array([1.5]), VS)


def test_every_count_goes_through_params_used() -> None:
    act = Action.from_sizes(US, VS, d_max=8)
    assert act.params_used == params_used(US, VS) == 9
    masked = SizedEmbedding(2, 8, US)
    compact = CompactEmbedding.from_sized(masked)
    assert masked.params_used() == compact.params_used() == params_used(US, ()) == 5
    train = sp.csr_matrix(np.eye(3, 4, dtype=np.float32))
    ncf = build_model("ncf", 3, 4, train, 8, generator=torch.Generator().manual_seed(0))
    us, vs = np.array([1, 2, 3]), np.array([4, 4, 8, 1])
    ncf.set_sizes(us, vs)
    assert ncf.embedding_params_used() == params_used(us, vs, tables=2) == 46


@pytest.mark.parametrize(
    ("dtype", "layout", "tables", "values", "index", "row_meta"),
    [
        ("fp32", "jagged", 1, 36, 8 * 3 + 8 * 2, 0),  # offsets: (2 + 1) + (1 + 1) int64
        ("fp32", "bucketed", 1, 36, 3 * 8 + 3 * 16, 0),  # 8 B index/entity, 16 B/bucket: 2 + 1
        ("int8", "jagged", 1, 9, 40, 3 * 8),  # fp32 scale + bias per row
        ("fp16", "jagged", 2, 2 * 2 * 9, 40, 0),  # two tables share one offsets per type
        ("int8", "bucketed", 2, 2 * 9, 3 * 8 + 2 * 3 * 16, 2 * 3 * 8),
    ],
)
def test_hand_computed_bytes(
    dtype: str, layout: str, tables: int, values: int, index: int, row_meta: int
) -> None:
    u = Usage.of_sizes(US, VS, d_max=8, tables=tables, dtype=dtype, layout=layout)
    assert (u.values_bytes, u.index_bytes, u.row_meta_bytes) == (values, index, row_meta)
    assert u.bytes == values + index + row_meta
    assert u.params == 9 * tables and u.params_full == 8 * 3 * tables
    assert u.fraction_of_full == pytest.approx(9 / 24)
    assert u.dense_table_bytes == 4 * 8 * 3 * tables
    assert u.params_slack is None and u.bytes_slack is None


def test_usage_against_a_budget_and_its_dict() -> None:
    b = ResolvedBudget.resolve(bytes=200, n_users=2, n_items=1, d_max=8)
    assert (b.params, b.per_entity, b.bytes) == ((200 - 40) // 4, 40, 200)
    u = Usage.of_sizes(US, VS, budget=b, dense_params=7)
    assert (u.params_budget, u.params_slack, u.bytes_budget, u.bytes_slack) == (40, 31, 200, 124)
    assert (u.dense_backbone_bytes, u.total_bytes) == (28, 76 + 28)
    d = u.to_dict()
    assert json.loads(json.dumps(d)) == d  # plain JSON types
    assert d["params_used"] == 9 and d["bytes_used"] == 76 and d["bytes"]["embedding"] == 76
    assert d["bytes"]["fraction_of_dense_table"] == pytest.approx(76 / 96)
    assert Usage.from_dict(d) == u
    with pytest.raises(BudgetError):
        Usage.from_dict({k: v for k, v in d.items() if k != "tables"})
    with pytest.raises(BudgetError):  # sizes of another dataset
        Usage.of_sizes(US, np.array([1, 1]), budget=b)
    with pytest.raises(BudgetError):
        Usage.of_sizes(US, VS)  # no d_max


def test_resolve_matches_budget_and_bytes() -> None:
    b = ResolvedBudget.resolve(sparsity=0.5, n_users=2, n_items=1, d_max=8, tables=2)
    assert (b.params, b.per_entity, b.tables, b.bytes) == (24, 12, 2, None)
    assert b.params == Budget(sparsity=0.5).resolve(2 * 3, 8)
    assert ResolvedBudget.resolve(kept_fraction=0.25, n_users=2, n_items=1, d_max=8).params == 6
    assert ResolvedBudget.resolve(params=7, n_users=2, n_items=1, d_max=8, tables=2).per_entity == 3
    b8 = ResolvedBudget.resolve(
        bytes=200, dtype="int8", layout="jagged", n_users=2, n_items=1, d_max=8, tables=2
    )
    assert (b8.params, b8.per_entity) == (200 - 40 - 48, 56)
    assert b8.params == params_for_bytes(200, 2, 1, 8, "int8", "jagged", 2)
    whole = b.unbudgeted()
    assert (whole.params, whole.per_entity) == (2 * 8 * 3, 8 * 3)
    with pytest.raises(BudgetError) as e:
        ResolvedBudget.resolve(sparsity=0.5, bytes=100, n_users=2, n_items=1, d_max=8)
    assert e.value.error_type is BudgetErrorType.INVALID
    with pytest.raises(BudgetError):
        ResolvedBudget.resolve(sparsity=0.5, layout="ragged", n_users=2, n_items=1, d_max=8)


def test_check_feasible_and_from_config() -> None:
    tight = ResolvedBudget.resolve(params=5, n_users=2, n_items=1, d_max=8, size_step=2)
    with pytest.raises(BudgetError) as e:
        tight.check_feasible()  # 3 entities need 2 each
    assert e.value.error_type is BudgetErrorType.INFEASIBLE
    replace(tight, size_step=1).check_feasible()
    cfg = load_config(overrides=["budget.sparsity=null", "budget.bytes=5000"], fast=False)
    b = ResolvedBudget.from_config(cfg.budget, 10, 20, 16, tables=1, size_step=1)
    assert b.params == params_for_bytes(5000, 10, 20, 16) and b.bytes == 5000
    cfg = load_config(overrides=["budget.sparsity=0.8"], fast=False)
    b = ResolvedBudget.from_config(cfg.budget, 10, 20, 16, tables=2)
    assert b.params == Budget(sparsity=0.8).resolve(2 * 30, 16) and b.bytes is None


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 30),
    st.integers(1, 30),
    st.sampled_from([4, 8, 16]),
    st.integers(1, 2),
    st.integers(0, 9999),
    st.integers(0, 2**31),
)
def test_sizes_built_within_the_budget_use_at_most_it(
    nu: int, nv: int, d: int, tables: int, sparsity_e4: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    b = ResolvedBudget.resolve(
        sparsity=sparsity_e4 / 10_000, n_users=nu, n_items=nv, d_max=d, tables=tables
    )
    try:
        b.check_feasible()
    except BudgetError:
        assert b.per_entity < nu + nv
        return
    built = [
        uniform_sizes(nu, nv, b.per_entity, d),
        random_sizes(nu, nv, b.per_entity, d, rng),
    ]
    raw = repair(rng.integers(1, d + 1, nu + nv), b.per_entity, np.arange(nu + nv))
    built.append((raw[:nu], raw[nu:]))
    for us, vs in built:
        u = Usage.of_sizes(us, vs, budget=b)
        assert u.params <= b.params and u.params_slack is not None and u.params_slack >= 0
        assert u.params == tables * int(us.sum() + vs.sum())


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 20),
    st.integers(1, 20),
    st.sampled_from([4, 8, 16]),
    st.sampled_from(["fp32", "fp16", "bf16", "int8"]),
    st.sampled_from(["jagged", "bucketed"]),
    st.integers(1, 2),
    st.integers(0, 2**31),
)
def test_byte_budget_gives_params_within_the_bytes(
    nu: int, nv: int, d: int, dtype: str, layout: str, tables: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    full = Usage.of_sizes(
        np.full(nu, d), np.full(nv, d), d_max=d, tables=tables, dtype=dtype, layout=layout
    )
    byte_budget = int(rng.integers(full.index_bytes, full.bytes + 64 * d))
    try:
        b = ResolvedBudget.resolve(
            bytes=byte_budget,
            dtype=dtype,
            layout=layout,
            n_users=nu,
            n_items=nv,
            d_max=d,
            tables=tables,
        )
        b.check_feasible()
    except BudgetError:
        return
    us, vs = random_sizes(nu, nv, b.per_entity, d, rng)
    u = Usage.of_sizes(us, vs, budget=b)
    assert u.params <= b.params and u.bytes <= byte_budget
    assert u.bytes_slack is not None and u.bytes_slack >= 0


def test_usage_imports_no_torch() -> None:
    code = (
        "import sys, embudget.budget, embudget.budget.usage, embudget.budget.storage; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
