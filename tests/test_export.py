"""Export → load gives the same scores; buckets respect the budget; damaged files are refused."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from embudget.budget.core import check_budget
from embudget.budget.storage import params_for_bytes
from embudget.budget.usage import Usage
from embudget.config import load_config
from embudget.data import load_dataset
from embudget.deploy.export import bucket_sizes, export_model, export_run, load
from embudget.errors import BudgetError, BudgetErrorType, ExportError
from embudget.io import load_npz
from embudget.models import Backbone, build_model
from embudget.pipeline import run as loop
from embudget.result import RunResult
from embudget.tables.compact import CompactEmbedding, to_compact, to_masked
from embudget.training.evaluate import evaluate

NAMES = ["mf", "ncf", "ngcf", "lightgcn"]
NU, NI, D = 30, 24, 16


def random_train(seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    m = rng.random((NU, NI)) < 0.25
    m[np.arange(NU), np.arange(NU) % NI] = True
    return sp.csr_matrix(m.astype(np.float32))


def sized_model(name: str, seed: int = 0) -> Backbone:
    model = build_model(
        name, NU, NI, random_train(), D, generator=torch.Generator().manual_seed(seed)
    )
    rng = np.random.default_rng(seed + 1)
    model.set_sizes(rng.integers(1, D + 1, NU), rng.integers(1, D + 1, NI))
    return model.eval()


def scores(model: Backbone) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model.scorer()(torch.arange(model.n_users))


def write(model: Backbone, path: Path, **kw: object) -> dict:
    ids = {"user_ids": np.arange(100, 100 + NU), "item_ids": np.array([f"i{j}" for j in range(NI)])}
    kw.setdefault("with_history", True)
    return export_model(model, path, train=random_train(), **ids, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("fmt", ["safetensors", "npz"])
def test_export_load_gives_the_same_scores(name: str, fmt: str, tmp_path: Path) -> None:
    masked = sized_model(name)
    ref = scores(masked)
    meta = write(masked, tmp_path / "t", fmt=fmt)
    ex = load(tmp_path / "t")
    assert all(isinstance(t, CompactEmbedding) for t in ex.model.embedding_tables())
    got = scores(ex.model)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    assert torch.equal(torch.topk(got, 5).indices, torch.topk(ref, 5).indices)
    assert ex.meta["model"]["name"] == name and meta["layout"] == "jagged"
    assert ex.user_ids.tolist() == list(range(100, 100 + NU))
    assert ex.item_ids.tolist() == [f"i{j}" for j in range(NI)]
    assert (ex.train != random_train()).nnz == 0
    mem = ex.meta["memory"]
    assert mem["params_used"] == masked.embedding_params_used()
    assert Usage.from_dict(mem).to_dict() == mem  # the export's memory is a Usage record
    assert mem["bytes"]["values"] == 4 * masked.embedding_params_used()
    for side, tables in (("user", masked.user_tables()), ("item", masked.item_tables())):
        assert ex.meta["tables"][side] == [n for n, m in masked.named_children() if m in tables]


def test_export_from_compact_model_equals_from_masked(tmp_path: Path) -> None:
    masked = sized_model("lightgcn")
    write(masked, tmp_path / "a")
    write(to_compact(copy.deepcopy(masked)), tmp_path / "b")
    a, b = load(tmp_path / "a"), load(tmp_path / "b")
    assert a.meta["sha256"] == b.meta["sha256"]
    assert torch.equal(scores(a.model), scores(b.model))


@pytest.mark.parametrize("dtype", ["fp16", "int8"])
def test_reduced_precision_is_close_and_smaller(dtype: str, tmp_path: Path) -> None:
    masked = sized_model("mf")
    ref = scores(masked)
    m32 = write(masked, tmp_path / "a")
    m = write(masked, tmp_path / "b", dtype=dtype)
    got = scores(load(tmp_path / "b").model)
    err = float((got - ref).abs().max())
    scale = float(ref.abs().max())
    assert 0 < err < (1e-3 if dtype == "fp16" else 0.05) * scale
    used = masked.embedding_params_used()
    n = NU + NI
    assert m["memory"]["bytes"]["values"] == (2 if dtype == "fp16" else 1) * used
    assert m["memory"]["bytes"]["row_meta"] == (8 * n if dtype == "int8" else 0)
    assert m["memory"]["bytes"]["embedding"] < m32["memory"]["bytes"]["embedding"]


def test_int8_codes_round_trip_within_half_a_step(tmp_path: Path) -> None:
    masked = sized_model("mf", seed=3)
    write(masked, tmp_path / "q", dtype="int8")
    ex = load(tmp_path / "q")
    for name in ("user_emb", "item_emb"):
        exact = getattr(masked, name).full()
        approx = getattr(ex.model, name).full()
        lo = exact.masked_fill(~getattr(masked, name).mask(), np.inf).min(1).values
        hi = exact.masked_fill(~getattr(masked, name).mask(), -np.inf).max(1).values
        step = ((hi - lo) / 255).clamp_min(1e-12)
        assert torch.all((approx - exact).abs() <= step[:, None] / 2 + 1e-6)


# --------------------------------------------------------------------------------------------
# buckets (bet.md §14.3)
# --------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 15),
    st.integers(1, 15),
    st.sampled_from([4, 8, 30, 32]),
    st.floats(0.0, 1.0),
    st.integers(0, 2**31),
)
def test_bucket_rounding_never_exceeds_the_budget(
    nu: int, nv: int, d: int, frac: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    n = nu + nv
    B = int(4 * n + frac * (d - 4) * n) if d > 4 else 4 * n
    sizes = rng.integers(1, d + 1, n)
    if sizes.sum() > B:  # a valid input respects the budget
        sizes = np.maximum(1, sizes * B // sizes.sum())
    us, vs = bucket_sizes(sizes[:nu], sizes[nu:], B, d)
    out = np.concatenate([us, vs])
    check_budget(us, vs, B, d, step=4)
    assert out.sum() <= B and np.all(out % 4 == 0) and out.min() >= 4 and out.max() <= d
    # rounding down (or up to 4) is all that changes when no repair is needed
    rounded = np.clip(sizes // 4 * 4, 4, d // 4 * 4)
    if rounded.sum() <= B:
        assert np.array_equal(out, rounded)
    else:
        assert np.all(out <= rounded)


def test_bucket_rounding_infeasible_below_four_per_entity() -> None:
    with pytest.raises(BudgetError) as e:
        bucket_sizes(np.array([1, 2]), np.array([3]), 11, 8)
    assert e.value.error_type is BudgetErrorType.INFEASIBLE


def test_bucketed_export_holds_one_table_per_size(tmp_path: Path) -> None:
    masked = sized_model("ncf")
    us = masked.user_tables()[0].sizes.numpy().astype(np.int64)
    vs = masked.item_tables()[0].sizes.numpy().astype(np.int64)
    B = int(us.sum() + vs.sum())
    meta = write(masked, tmp_path / "b", fmt="buckets")
    assert meta["layout"] == "bucketed" and meta["buckets"]["budget_params_per_entity"] == B
    from safetensors import safe_open

    with safe_open(str(tmp_path / "b"), framework="np") as f:
        keys = set(f.keys())
        for side, sizes in (("user", us), ("item", vs)):
            dims = f.get_tensor(f"buckets.{side}.dims")
            counts = f.get_tensor(f"buckets.{side}.counts")
            assert np.all(dims % 4 == 0) and counts.sum() == sizes.size
            for name in meta["tables"][side]:
                for dim, c in zip(dims.tolist(), counts.tolist(), strict=True):
                    assert f.get_tensor(f"emb.{name}.bucket{dim}").shape == (c, dim)
    assert not any(k.endswith(".values") for k in keys)
    # the loaded model is the original with each row cut or zero-extended to its bucket size
    ex = load(tmp_path / "b")
    bu, bv = bucket_sizes(us, vs, B, D)
    assert np.array_equal(ex.model.user_tables()[0].sizes.numpy(), bu)
    ref = to_masked(to_compact(copy.deepcopy(masked)))  # zeros past the trained sizes
    ref.set_sizes(bu, bv)
    torch.testing.assert_close(scores(ex.model), scores(ref), rtol=0, atol=1e-6)
    assert meta["memory"]["params_used"] == 2 * int(bu.sum() + bv.sum()) <= 2 * B


# --------------------------------------------------------------------------------------------
# damaged files
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["safetensors", "npz"])
def test_truncated_or_corrupted_files_raise_export_error(fmt: str, tmp_path: Path) -> None:
    write(sized_model("mf"), tmp_path / "ok", fmt=fmt)
    blob = (tmp_path / "ok").read_bytes()
    cases = {
        "truncated": blob[: len(blob) // 2],
        "header only": blob[:64],
        "empty": b"",
        "garbage": b"not an export at all" * 10,
    }
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0xFF  # inside the tensor data
    cases["bit flip"] = bytes(flipped)
    for label, data in cases.items():
        p = tmp_path / f"bad-{label}"
        p.write_bytes(data)
        with pytest.raises(ExportError):
            load(p)
    with pytest.raises(ExportError):
        load(tmp_path / "missing")


def test_foreign_files_and_overwrite_are_refused(tmp_path: Path) -> None:
    save_file({"x": np.zeros(3, np.float32)}, str(tmp_path / "foreign"))
    with pytest.raises(ExportError, match="without embudget metadata"):
        load(tmp_path / "foreign")
    write(sized_model("mf"), tmp_path / "t")
    with pytest.raises(ExportError, match="exists"):
        write(sized_model("mf"), tmp_path / "t")
    with pytest.raises(ExportError):
        write(sized_model("mf"), tmp_path / "u", fmt="parquet")


def test_loading_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for fmt in ("safetensors", "npz"):
        write(sized_model("ngcf"), tmp_path / fmt, fmt=fmt)

    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    for fmt in ("safetensors", "npz"):
        assert load(tmp_path / fmt).model.name == "ngcf"


# --------------------------------------------------------------------------------------------
# from a real run directory (gowalla-mini, byte budget)
# --------------------------------------------------------------------------------------------
RUN_SETTINGS = [
    "data.name=gowalla-mini",
    "model.name=mf",
    "model.d_max=32",
    "train.batch_users=1000",
    "train.eval_every_steps=30",
    "train.patience=1",
    "train.max_steps=60",
    "search.method=sr",
    "budget.sparsity=null",
    "budget.bytes=100000",  # 41 % of the full 32-wide jagged table's bytes
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("run")
    cfg = load_config(overrides=[*RUN_SETTINGS, f"cache_dir={base / 'cache'}"], fast=False)
    loop.run_search(cfg, base / "run", progress=False)
    return base / "run"


def test_byte_budget_run_meets_the_bytes(run_dir: Path) -> None:
    res = RunResult.read(run_dir / "results.json")
    u = res.usage
    ds = load_dataset("gowalla-mini")
    assert u.params_budget == params_for_bytes(100000, ds.n_users, ds.n_items, 32)
    assert u.bytes_budget == 100000 and u.bytes <= 100000
    sizes = load_npz(run_dir / "sizes.npz")
    total = int(sizes["user_sizes"].sum() + sizes["item_sizes"].sum())
    assert u.bytes == 4 * total + 8 * (ds.n_users + 1) + 8 * (ds.n_items + 1)
    assert res.storage == "compact"


def test_export_run_reproduces_the_runs_test_metrics(run_dir: Path, tmp_path: Path) -> None:
    res = RunResult.read(run_dir / "results.json")
    meta = export_run(run_dir, tmp_path / "t.safetensors", with_history=True)
    ds = load_dataset("gowalla-mini")
    assert meta["dataset"]["split_fingerprint"] == ds.fingerprint() == res.split_fingerprint
    assert meta["budget"]["bytes_used"] == meta["memory"]["bytes"]["embedding"]
    ex = load(tmp_path / "t.safetensors")
    assert np.array_equal(ex.user_ids, ds.user_ids) and np.array_equal(ex.item_ids, ds.item_ids)
    assert ex.history.nnz == ds.train.nnz + ds.valid.nnz + ds.test.nnz
    ex.model.eval()
    with torch.no_grad():
        test = evaluate(ex.model.scorer(), ds, split="test", ks=(5, 10, 20))
    for k in ("recall@20", "ndcg@20", "recall@5"):
        assert test.means[k] == pytest.approx(res.test.means[k], abs=1e-9)
    # int8 export (without history): the Recall@20 change it causes stays small
    export_run(run_dir, tmp_path / "q.npz", fmt="npz", dtype="int8")
    q = load(tmp_path / "q.npz")
    assert q.history is None and q.train is None
    with torch.no_grad():
        test_q = evaluate(q.model.scorer(), ds, split="test", ks=(20,))
    assert abs(test_q.means["recall@20"] - test.means["recall@20"]) < 0.01


def test_package_level_load(tmp_path: Path) -> None:
    import embudget

    write(sized_model("mf"), tmp_path / "t")
    assert embudget.load is load
    assert embudget.load(tmp_path / "t").model.name == "mf"


INTERACTION_TENSORS = ("train.indptr", "train.indices", "history.indptr", "history.indices")


def tensor_names_and_meta(path: Path) -> tuple[set[str], dict]:
    """The stored tensor names and metadata, read with the container's own reader."""
    from embudget.deploy.container import open_container

    with open_container(path) as c:
        return set(c.entries), c.meta


@pytest.mark.parametrize("fmt", ["safetensors", "npz", "buckets"])
def test_export_holds_no_interactions_unless_asked(run_dir: Path, tmp_path: Path, fmt: str) -> None:
    ds = load_dataset("gowalla-mini")
    export_run(run_dir, tmp_path / "plain", fmt=fmt)
    names, meta = tensor_names_and_meta(tmp_path / "plain")
    assert not names & set(INTERACTION_TENSORS)
    assert not any(n.startswith(("train.", "history.")) for n in names)
    assert meta["history"] is False
    # no interaction count anywhere in the metadata (n_users and n_items only)
    counts = {ds.train.nnz, ds.valid.nnz, ds.test.nnz, ds.train.nnz + ds.valid.nnz}
    counts.add(ds.train.nnz + ds.valid.nnz + ds.test.nnz)

    def ints(v: object) -> list[int]:
        if isinstance(v, dict):
            return [i for x in v.values() for i in ints(x)]
        if isinstance(v, list):
            return [i for x in v for i in ints(x)]
        return [v] if isinstance(v, int) and not isinstance(v, bool) else []

    assert not counts & set(ints(meta))
    ex = load(tmp_path / "plain")
    assert ex.history is None and ex.train is None
    export_run(run_dir, tmp_path / "hist", fmt=fmt, with_history=True)
    names, meta = tensor_names_and_meta(tmp_path / "hist")
    assert set(INTERACTION_TENSORS) <= names and meta["history"] is True
    history = load(tmp_path / "hist").history
    assert history is not None
    assert history.nnz == ds.train.nnz + ds.valid.nnz + ds.test.nnz


def test_graph_backbones_need_the_history(tmp_path: Path) -> None:
    for name in ("ngcf", "lightgcn"):
        with pytest.raises(ExportError, match="--with-history"):
            write(sized_model(name), tmp_path / name, with_history=False)
        assert not (tmp_path / name).exists()
