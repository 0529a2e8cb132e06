"""Serving: top-k from an export excludes seen items, knows raw ids, and has a CLI."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from embudget.cli import main
from embudget.config import load_config
from embudget.deploy.export import export_model
from embudget.deploy.serve import Recommender, read_user_file
from embudget.errors import ConfigError, UnknownIdError
from embudget.models import build_model
from embudget.pipeline import run as loop

NU, NI, D = 12, 9, 8


def train_matrix() -> sp.csr_matrix:
    rng = np.random.default_rng(0)
    m = rng.random((NU, NI)) < 0.3
    m[np.arange(NU), np.arange(NU) % NI] = True
    m[0] = True  # user 0 has seen every item but one
    m[0, 4] = False
    return sp.csr_matrix(m.astype(np.float32))


def history_matrix() -> sp.csr_matrix:
    h = train_matrix().tolil()
    h[1, 8] = 1.0  # a held-out interaction: excluded with the history, not with train
    h[1, 7] = 1.0
    return sp.csr_matrix(h)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = build_model("lightgcn", NU, NI, train_matrix(), D, generator=torch.Generator())
    rng = np.random.default_rng(1)
    model.set_sizes(rng.integers(1, D + 1, NU), rng.integers(1, D + 1, NI))
    path = tmp_path_factory.mktemp("exp") / "table.safetensors"
    export_model(
        model,
        path,
        train=train_matrix(),
        history=history_matrix(),
        with_history=True,
        user_ids=np.array([f"u{i}" for i in range(NU)]),
        item_ids=np.arange(500, 500 + NI),
    )
    return path


def slow_topk(rec: Recommender, user: int, k: int, seen: sp.csr_matrix) -> list[int]:
    """Loop reference: every unseen item, sorted by score descending."""
    with torch.no_grad():
        s = rec.scorer()(torch.tensor([user]))[0].tolist()
    unseen = [i for i in range(NI) if seen[user, i] == 0]
    return sorted(unseen, key=lambda i: -s[i])[:k]


def test_recommend_matches_a_loop_reference_and_excludes_seen(exported: Path) -> None:
    rec = Recommender.load(exported, batch_users=5)  # several batches
    users = [f"u{i}" for i in range(NU)][::-1]
    out = rec.recommend(users, k=4)
    assert out.items.shape == (NU, 4) and out.scores.dtype == np.float32
    for r, u in enumerate(users):
        idx = int(u[1:])
        ref = slow_topk(rec, idx, 4, history_matrix())
        assert out.counts[r] == len(ref)
        assert out.items[r, : len(ref)].tolist() == [500 + i for i in ref]
        assert np.all(np.diff(out.scores[r, : out.counts[r]]) <= 0)
    # user 0 has one unseen item only; user 1's held-out items come back when only train counts
    r0 = users.index("u0")
    assert out.counts[r0] == 1 and out.items[r0, 0] == 504 and np.isneginf(out.scores[r0, 1:]).all()
    only_train = rec.recommend(["u1"], k=NI, exclude="train")
    assert {507, 508} <= set(only_train.items[0, : only_train.counts[0]].tolist())
    hist = rec.recommend(["u1"], k=NI)
    assert not {507, 508} & set(hist.items[0, : hist.counts[0]].tolist())
    assert hist.counts[0] == only_train.counts[0] - 2
    everything = rec.recommend(["u3"], k=NI, exclude="none")
    assert everything.counts[0] == NI
    rows = list(rec.recommend(["u0", "u2"], k=2).rows())
    assert rows[0] == ("u0", 1, 504, pytest.approx(rows[0][3]))
    assert [r[:2] for r in rows] == [("u0", 1), ("u2", 1), ("u2", 2)]


def test_unknown_users_and_bad_arguments(exported: Path) -> None:
    rec = Recommender.load(exported)
    with pytest.raises(UnknownIdError, match="u99"):
        rec.recommend(["u1", "u99"], k=3)
    with pytest.raises(UnknownIdError):
        rec.recommend(["u"], k=3)  # a prefix of known ids is not an id
    with pytest.raises(UnknownIdError):
        rec.recommend(["u11x"], k=3)  # longer than every stored id
    with pytest.raises(ConfigError):
        rec.recommend(["u1"], k=0)
    with pytest.raises(ConfigError):
        rec.recommend(["u1"], exclude="valid")
    assert rec.user_index(["u11", "u0"]).tolist() == [11, 0]


def test_integer_ids_parse_from_strings(tmp_path: Path) -> None:
    model = build_model("mf", NU, NI, train_matrix(), D, generator=torch.Generator())
    path = tmp_path / "t.npz"
    export_model(
        model,
        path,
        fmt="npz",
        train=train_matrix(),
        user_ids=np.arange(NU)[::-1] * 10,
        item_ids=np.arange(NI),
    )
    rec = Recommender.load(path)
    assert rec.user_index(["0", " 110 ", 20]).tolist() == [NU - 1, 0, NU - 3]
    with pytest.raises(UnknownIdError, match="abc"):
        rec.user_index(["abc"])
    with pytest.raises(UnknownIdError, match="5"):
        rec.user_index(["5"])


def test_recommend_without_history_excludes_nothing_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = build_model("mf", NU, NI, train_matrix(), D, generator=torch.Generator())
    ids = {"user_ids": np.arange(NU), "item_ids": np.arange(NI)}
    export_model(model, tmp_path / "plain", train=train_matrix(), **ids)  # type: ignore[arg-type]
    export_model(
        model,
        tmp_path / "hist",
        train=train_matrix(),
        with_history=True,
        **ids,  # type: ignore[arg-type]
    )
    plain, hist = Recommender.load(tmp_path / "plain"), Recommender.load(tmp_path / "hist")
    assert not plain.has_history and hist.has_history
    with caplog.at_level(logging.WARNING, logger="embudget.deploy.serve"):
        out = plain.recommend([0, 1], k=NI)
    assert "no interaction history" in caplog.text
    assert out.counts.tolist() == [NI, NI]  # nothing excluded
    everything = hist.recommend([0, 1], k=NI, exclude="none")
    assert np.array_equal(out.items, everything.items)
    seen = hist.recommend([0, 1], k=NI)
    assert seen.counts.tolist() == [NI - train_matrix()[u].nnz for u in (0, 1)]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="embudget.deploy.serve"):
        plain.recommend([0], k=3, exclude="none")  # nothing asked to be excluded: no warning
    assert not caplog.text


def test_read_user_file(tmp_path: Path) -> None:
    p = tmp_path / "users.txt"
    p.write_text("u1\n\n# comment\nu2  # trailing\n")
    assert read_user_file(p) == ["u1", "u2"]
    with pytest.raises(ConfigError):
        read_user_file(tmp_path / "nope.txt")


# --------------------------------------------------------------------------------------------
# CLI: search --budget-bytes -> export -> recommend, on gowalla-mini
# --------------------------------------------------------------------------------------------
def test_cli_export_and_recommend(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = load_config(
        overrides=[
            "data.name=gowalla-mini",
            "model.name=mf",
            "model.d_max=16",
            "train.batch_users=1000",
            "train.eval_every_steps=20",
            "train.patience=1",
            "train.max_steps=20",
            "search.method=su",
            "budget.sparsity=null",
            "budget.bytes=56000",  # 43 % of the full 16-wide jagged table's bytes
            f"cache_dir={tmp_path / 'cache'}",
        ],
        fast=False,
    )
    loop.run_search(cfg, tmp_path / "run", progress=False)
    out = tmp_path / "t.safetensors"
    export = ["export", str(tmp_path / "run"), "--with-history", "--out", str(out)]
    assert main(export) == 0
    assert "jagged, fp32, mf, with interaction history" in capsys.readouterr().out
    assert main(export) == 2  # exists
    capsys.readouterr()
    plain = tmp_path / "plain.safetensors"
    assert main(["export", str(tmp_path / "run"), "--out", str(plain)]) == 0
    capsys.readouterr()
    assert main(["recommend", str(plain), "--user", "2", "-k", "3"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "note: this table carries no interaction history; seen items are not excluded "
        "(export with --with-history)"
    ]

    assert main(["recommend", str(out), "--user", "2", "--user", "4", "-k", "5"]) == 0
    lines = [ln.split("\t") for ln in capsys.readouterr().out.splitlines()]
    assert [(ln[0], ln[1]) for ln in lines] == [("2", str(r)) for r in range(1, 6)] + [
        ("4", str(r)) for r in range(1, 6)
    ]
    rec = Recommender.load(out).recommend(["2", "4"], k=5)
    assert [int(ln[2]) for ln in lines] == rec.items.ravel().tolist()

    users = tmp_path / "users.txt"
    users.write_text("4\n2\n")
    assert main(["recommend", str(out), "--users-file", str(users), "-k", "3", "--json"]) == 0
    recs = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert [(r["user"], r["rank"]) for r in recs] == [("4", 1), ("4", 2), ("4", 3)] + [
        ("2", 1),
        ("2", 2),
        ("2", 3),
    ]
    assert main(["recommend", str(out), "--user", "no-such-user"]) == 2
    assert "unknown user id" in capsys.readouterr().err
    (tmp_path / "broken").write_bytes(out.read_bytes()[:100])
    assert main(["recommend", str(tmp_path / "broken"), "--user", "2"]) == 2
    assert "truncated or corrupted" in capsys.readouterr().err
