"""TorchRec export: the package loads into an EmbeddingBagCollection whose lookups equal
embudget.load's tables exactly, unsharded and sharded (DistributedModelParallel, gloo)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

pytest.importorskip("torchrec")

from embudget.cli import main  # noqa: E402
from embudget.config import load_config  # noqa: E402
from embudget.data import load_dataset  # noqa: E402
from embudget.deploy.export import export_model, export_run, load  # noqa: E402
from embudget.deploy.torchrec import bucket_dims, load_torchrec  # noqa: E402
from embudget.deploy.torchrec_shard import run_sharded, sharding_plan  # noqa: E402
from embudget.errors import ExportError, RunDirError, UnknownIdError  # noqa: E402
from embudget.io import load_npz  # noqa: E402
from embudget.models import Backbone, build_model  # noqa: E402
from embudget.pipeline import run as loop  # noqa: E402

# a budgeted run on gowalla-mini in well under a second: SR sizes (any size 1..32, so most
# buckets need zero columns up to a multiple of 4)
RUN_SETTINGS = [
    "data.name=gowalla-mini",
    "model.name=mf",
    "model.d_max=32",
    "train.batch_users=1000",
    "train.eval_every_steps=30",
    "train.patience=1",
    "train.max_steps=30",
    "search.method=sr",
    "budget.sparsity=null",
    "budget.bytes=100000",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("run")
    cfg = load_config(overrides=[*RUN_SETTINGS, f"cache_dir={base / 'cache'}"], fast=False)
    loop.run_search(cfg, base / "run", progress=False)
    return base / "run"


@pytest.fixture(scope="module")
def reference(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """embudget.load's zero-padded tables of the run (jagged fp32 export)."""
    path = tmp_path_factory.mktemp("ref") / "t.safetensors"
    export_run(run_dir, path)
    m = load(path).model
    return {
        "user_emb": m.user_tables()[0].full().detach().numpy(),
        "item_emb": m.item_tables()[0].full().detach().numpy(),
    }


def test_export_load_round_trip(
    run_dir: Path, reference: dict[str, np.ndarray], tmp_path: Path
) -> None:
    out = tmp_path / "pkg"
    meta = export_run(run_dir, out, fmt="torchrec")
    assert sorted(p.name for p in out.iterdir()) == [
        "configs.json",
        "maps.npz",
        "meta.json",
        "state.safetensors",
    ]
    ebc, maps = load_torchrec(out)
    configs = json.loads((out / "configs.json").read_text())
    # the state dict holds exactly the collection's keys, one table per bucket
    from safetensors.numpy import load_file

    state = load_file(out / "state.safetensors")
    assert (
        set(state)
        == set(ebc.state_dict())
        == {f"embedding_bags.{c['name']}.weight" for c in configs}
    )
    for c in configs:
        assert set(c) == {"name", "embedding_dim", "num_embeddings", "feature_names", "pooling"}
        assert c["embedding_dim"] % 4 == 0 and c["feature_names"] == [c["name"]]
        assert state[f"embedding_bags.{c['name']}.weight"].shape == (
            c["num_embeddings"],
            c["embedding_dim"],
        )
    # every row's size rounds up to its table's dim; the zero columns are counted
    for side, table in (("user", "user_emb"), ("item", "item_emb")):
        s = maps.size[side].astype(np.int64)
        assert np.array_equal(maps.dims[side][maps.bucket[side]], bucket_dims(s))
        assert np.array_equal(s, load_npz(run_dir / "sizes.npz")[f"{side}_sizes"])
        n = s.size
        got = maps.lookup(ebc, side, np.arange(n))[table].numpy()
        assert np.array_equal(got, reference[table])  # exact, padding included
        some = np.array([n - 1, 0, 3, 3])
        assert np.array_equal(maps.lookup(ebc, side, some)[table].numpy(), reference[table][some])
    zeros = sum(int((bucket_dims(maps.size[s]) - maps.size[s]).sum()) for s in ("user", "item"))
    assert meta["padding"]["zero_values"] == zeros > 0
    assert meta["memory"]["values"] == sum(v.size for v in state.values())
    assert meta["source"]["method"] == "sr" and meta["model"]["name"] == "mf"
    assert json.loads((out / "meta.json").read_text()) == meta


def test_no_raw_ids_or_history_unless_asked(run_dir: Path, tmp_path: Path) -> None:
    ds = load_dataset("gowalla-mini")
    export_run(run_dir, tmp_path / "plain", fmt="torchrec")
    with np.load(tmp_path / "plain" / "maps.npz", allow_pickle=False) as z:
        assert not any(k.startswith("ids.") for k in z.files)
    _, maps = load_torchrec(tmp_path / "plain")
    assert maps.user_ids is None and maps.history is None and maps.meta["history"] is False
    with pytest.raises(ExportError, match="no raw ids"):
        maps.index_of("user", ds.user_ids[:2])
    export_run(run_dir, tmp_path / "hist", fmt="torchrec", with_history=True)
    _, maps = load_torchrec(tmp_path / "hist")
    assert maps.history is not None and maps.train is not None
    assert maps.history.nnz == ds.train.nnz + ds.valid.nnz + ds.test.nnz
    assert (maps.train != ds.train).nnz == 0
    assert np.array_equal(maps.index_of("item", ds.item_ids[[5, 2]]), [5, 2])
    with pytest.raises(UnknownIdError):
        maps.index_of("user", [-12345])


def _sized(name: str, step: int, d: int = 16) -> Backbone:
    nu, ni = 30, 24
    rng = np.random.default_rng(0)
    train = sp.csr_matrix((rng.random((nu, ni)) < 0.3).astype(np.float32))
    model = build_model(name, nu, ni, train, d, generator=torch.Generator().manual_seed(0))
    model.set_sizes(
        rng.integers(1, d // step + 1, nu) * step, rng.integers(1, d // step + 1, ni) * step
    )
    return model.eval()


def test_two_tables_per_entity_and_no_padding_at_size_step_4(tmp_path: Path) -> None:
    model = _sized("ncf", 4)  # sizes a multiple of 4 (search.sampler.size_step=4): no zeros
    nu, ni = model.n_users, model.n_items
    meta = export_model(
        model,
        tmp_path / "p",
        train=sp.csr_matrix((nu, ni)),
        user_ids=np.arange(nu),
        item_ids=np.arange(ni),
        fmt="torchrec",
    )
    assert meta["padding"]["zero_values"] == 0
    ebc, maps = load_torchrec(tmp_path / "p")
    assert set(maps.tables("user")) == {"user_gmf", "user_mlp"}
    for side, tables in (("user", model.user_tables()), ("item", model.item_tables())):
        n = tables[0].num
        got = maps.lookup(ebc, side, np.arange(n))
        by_id = {id(m): k for k, m in model.named_modules()}
        for t in tables:
            assert torch.equal(got[by_id[id(t)]], t.full().detach())
    dense = {k: v for k, v in model.state_dict().items() if k.startswith(("mlp.", "out."))}
    assert set(maps.dense) == set(dense)
    assert all(np.array_equal(maps.dense[k], v.numpy()) for k, v in dense.items())


def test_d_max_not_a_multiple_of_4(tmp_path: Path) -> None:
    model = _sized("mf", 1, d=18)  # a size-17 or -18 row sits in a 20-wide table
    nu, ni = model.n_users, model.n_items
    meta = export_model(
        model,
        tmp_path / "p",
        train=sp.csr_matrix((nu, ni)),
        user_ids=np.arange(nu),
        item_ids=np.arange(ni),
        fmt="torchrec",
    )
    ebc, maps = load_torchrec(tmp_path / "p")
    assert 20 in maps.dims["user"].tolist() + maps.dims["item"].tolist()
    assert meta["padding"]["zero_values"] > 0
    for side, table in (("user", model.user_emb), ("item", model.item_emb)):
        got = maps.lookup(ebc, side, np.arange(table.num))[f"{side}_emb"]
        assert got.shape == (table.num, 18) and torch.equal(got, table.full().detach())


def test_damaged_or_missing_inputs_raise_typed_errors(run_dir: Path, tmp_path: Path) -> None:
    # a run folder without its model
    broken = tmp_path / "run"
    broken.mkdir()
    for name in ("config.yaml", "results.json"):
        (broken / name).write_bytes((run_dir / name).read_bytes())
    with pytest.raises(RunDirError, match=r"missing model\.safetensors"):
        export_run(broken, tmp_path / "x", fmt="torchrec")
    assert not (tmp_path / "x").exists()
    # graph backbones need the training graph, as every export format does
    with pytest.raises(ExportError, match="--with-history"):
        m = _sized("lightgcn", 1)
        export_model(
            m,
            tmp_path / "g",
            train=sp.csr_matrix((m.n_users, m.n_items)),
            user_ids=np.arange(m.n_users),
            item_ids=np.arange(m.n_items),
            fmt="torchrec",
        )
    pkg = tmp_path / "pkg"
    export_run(run_dir, pkg, fmt="torchrec")
    with pytest.raises(ExportError, match="already exists"):
        export_run(run_dir, pkg, fmt="torchrec")
    with pytest.raises(ExportError, match="fp32"):
        export_run(run_dir, tmp_path / "h", fmt="torchrec", dtype="fp16")
    export_run(run_dir, pkg, fmt="torchrec", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg", "run"]  # no temporary left
    # a flipped byte, a missing file, not a package
    data = bytearray((pkg / "state.safetensors").read_bytes())
    data[-1] ^= 1
    (pkg / "state.safetensors").write_bytes(bytes(data))
    with pytest.raises(ExportError, match="sha256"):
        load_torchrec(pkg)
    (pkg / "maps.npz").unlink()
    with pytest.raises(ExportError, match=r"missing .*maps\.npz"):
        load_torchrec(pkg)
    with pytest.raises(ExportError, match="not a directory"):
        load_torchrec(run_dir / "results.json")
    with pytest.raises(ExportError, match="meta.json"):
        load_torchrec(run_dir)


def test_cli_export_torchrec(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pkg"
    assert main(["export", str(run_dir), "--format", "torchrec", "--out", str(out)]) == 0
    assert "TorchRec package" in capsys.readouterr().out
    load_torchrec(out)


def test_sharding_plans_split_what_fbgemm_allows() -> None:
    configs = [{"name": f"t{d}", "embedding_dim": d} for d in (4, 8, 12, 16)]
    assert sharding_plan(configs, "table_wise", 2) == dict.fromkeys(
        ["t4", "t8", "t12", "t16"], "table_wise"
    )
    cw = sharding_plan(configs, "column_wise", 2)
    assert cw == {
        "t4": "table_wise",
        "t8": "column_wise",
        "t12": "table_wise",
        "t16": "column_wise",
    }
    with pytest.raises(ExportError, match="row_wise"):
        sharding_plan(configs, "row_wise", 2)


@pytest.mark.distributed
def test_sharded_lookups_equal_embudget_load(
    run_dir: Path, reference: dict[str, np.ndarray], tmp_path: Path
) -> None:
    pkg = tmp_path / "pkg"
    export_run(run_dir, pkg, fmt="torchrec")
    _, maps = load_torchrec(pkg)
    # some buckets (dims 8, 16, 24) split into two 4k-column shards, the others table-wise
    assert "column_wise" in sharding_plan(maps.configs, "column_wise", 2).values()
    users = np.arange(maps.size["user"].size)
    items = np.array([7, 0, 992, 7, 5])  # odd count: the ranks' slices are padded
    got = run_sharded(pkg, {"user": users, "item": items}, world=2)
    assert set(got) == {"table_wise", "column_wise"}
    for lookups in got.values():
        assert np.array_equal(lookups["user"]["user_emb"], reference["user_emb"])
        assert np.array_equal(lookups["item"]["item_emb"], reference["item_emb"][items])
