"""Byte accounting on hand-sized examples, byte budgets, and the config keys behind them."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from embudget.budget.core import repair
from embudget.budget.storage import fixed_overhead, params_for_bytes, table_bytes
from embudget.budget.usage import ResolvedBudget, Usage
from embudget.config import load_config
from embudget.errors import BudgetError, BudgetErrorType, ConfigError
from embudget.models import build_model
from embudget.pipeline.rundir import model_sizes

US, VS = np.array([2, 3]), np.array([4])  # 2 users, 1 item, d_max 8


def test_hand_sized_fp32_jagged() -> None:
    budget = ResolvedBudget(10, 10, tables=1, d_max=8, n_users=2, n_items=1, bytes=80)
    r = Usage.of_sizes(US, VS, budget=budget).to_dict()
    assert r["params_used"] == 9 and r["params_full"] == 24
    assert r["fraction_of_full"] == pytest.approx(9 / 24)
    b = r["bytes"]
    assert b["values"] == 36  # 9 values · 4 B
    assert b["index"] == 40  # offsets: 8 · (2 + 1) + 8 · (1 + 1)
    assert b["row_meta"] == 0
    assert b["embedding"] == 76 and b["dense_backbone"] == 0 and b["total"] == 76
    assert b["dense_table"] == 96  # 3 rows · 8 · 4 B
    assert b["fraction_of_dense_table"] == pytest.approx(76 / 96)
    assert r["params_slack"] == 1 and r["bytes_slack"] == 4


def test_hand_sized_int8_bucketed_and_two_tables() -> None:
    assert table_bytes(US, VS, "int8") == {
        "values": 9,
        "index": 40,
        "row_meta": 24,  # (scale, bias) fp32 per row, 3 rows
        "embedding": 73,
    }
    # buckets: users {2, 3} -> 2 buckets, items {4} -> 1; index 8 B per entity + 16 B per bucket
    assert table_bytes(US, VS, "fp32", "bucketed") == {
        "values": 36,
        "index": 3 * 8 + 3 * 16,
        "row_meta": 0,
        "embedding": 108,
    }
    # NCF-like: two fp16 tables per entity share one offsets array per entity type
    assert table_bytes(US, VS, "fp16", tables=2)["embedding"] == 2 * 2 * 9 + 40
    assert fixed_overhead(2, 1, "int8", "bucketed", tables=2, buckets=(2, 1)) == {
        "index": 3 * 8 + 2 * 3 * 16,
        "row_meta": 2 * 3 * 8,
    }


def test_usage_of_a_model_lists_dense_weights_separately() -> None:
    train = sp.csr_matrix(np.eye(3, 4, dtype=np.float32))
    ncf = build_model("ncf", 3, 4, train, 8, generator=torch.Generator().manual_seed(0))
    ncf.set_sizes(np.array([1, 2, 3]), np.array([4, 4, 8, 1]))
    us, vs = model_sizes(ncf)
    tables = len(ncf.user_tables())
    usage = Usage.of_sizes(us, vs, d_max=8, tables=tables, dense_params=ncf.dense_params())
    r = usage.to_dict()
    assert r["tables"] == 2 and r["params_used"] == 2 * 23 == ncf.embedding_params_used()
    assert r["dense_params"] == ncf.dense_params() == (16 * 8 + 8) + (16 + 1)
    assert r["bytes"]["values"] == 4 * 46
    assert r["bytes"]["dense_backbone"] == 4 * ncf.dense_params()
    assert r["bytes"]["total"] == r["bytes"]["embedding"] + r["bytes"]["dense_backbone"]
    assert r["bytes"]["dense_table"] == 4 * 2 * 8 * 7


def test_params_for_bytes_subtracts_overhead_first() -> None:
    assert params_for_bytes(1000, 2, 1, 8) == (1000 - 40) // 4
    assert params_for_bytes(1000, 2, 1, 8, "int8") == 1000 - 40 - 24
    # bucketed: bounded by d_max / step buckets per entity type
    assert params_for_bytes(1000, 2, 1, 8, layout="bucketed") == (1000 - 24 - 16 * 16) // 4
    assert (
        params_for_bytes(1000, 2, 1, 8, layout="bucketed", size_step=4) == (1000 - 24 - 16 * 4) // 4
    )
    with pytest.raises(BudgetError) as e:
        params_for_bytes(39, 2, 1, 8)
    assert e.value.error_type is BudgetErrorType.INFEASIBLE
    with pytest.raises(BudgetError) as e:
        params_for_bytes(1000, 2, 1, 8, dtype="fp8")
    assert e.value.error_type is BudgetErrorType.INVALID


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 12),
    st.integers(1, 12),
    st.sampled_from([4, 8, 16]),
    st.sampled_from(["fp32", "fp16", "int8"]),
    st.sampled_from(["jagged", "bucketed"]),
    st.integers(1, 2),
    st.integers(0, 2**31),
)
def test_sizes_within_the_derived_budget_fit_the_bytes(
    nu: int, nv: int, d: int, dtype: str, layout: str, tables: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    n = nu + nv
    over = fixed_overhead(nu, nv, dtype, layout, tables, (d, d))
    per_value = {"fp32": 4, "fp16": 2, "int8": 1}[dtype]
    lo = over["index"] + over["row_meta"] + per_value * tables * n
    byte_budget = int(rng.integers(lo, lo + per_value * tables * d * n + 1))
    B = params_for_bytes(byte_budget, nu, nv, d, dtype, layout, tables)
    sizes = repair(rng.integers(1, d + 1, n), B // tables, np.arange(n))
    tb = table_bytes(sizes[:nu], sizes[nu:], dtype, layout, tables)
    assert tb["embedding"] <= byte_budget
    # exact: when the budget binds, less than one more unit (tables values) of bytes is left
    if sizes.sum() == B // tables:
        unused_headers = over["index"] - tb["index"]  # bucketed: bound minus actual buckets
        assert byte_budget - tb["embedding"] - unused_headers < per_value * tables


def test_config_byte_budget_keys() -> None:
    cfg = load_config(
        overrides=["budget.sparsity=null", "budget.bytes=123456", "budget.dtype=int8"], fast=False
    )
    assert cfg.budget.bytes == 123456 and cfg.budget.layout == "jagged"
    with pytest.raises(ConfigError):
        load_config(overrides=["budget.bytes=1000"], fast=False)  # sparsity is still set
    with pytest.raises(ConfigError):
        load_config(overrides=["budget.sparsity=null", "budget.bytes=0"], fast=False)
    with pytest.raises(ConfigError):
        load_config(overrides=["budget.dtype=fp8"], fast=False)
    with pytest.raises(ConfigError):
        load_config(overrides=["budget.layout=ragged"], fast=False)
