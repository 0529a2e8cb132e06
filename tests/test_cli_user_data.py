"""``embudget train`` and ``search`` on a user's own CSV (custom columns, timestamps, quoted
fields) with flags only, and the error a wrong column name gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embudget.cli import main
from embudget.result import RunResult

TINY = [
    "--set",
    "train.max_steps=20",
    "--set",
    "train.eval_every_steps=10",
    "--set",
    "search.iterations=2",
    "--set",
    "search.sampler.candidates=8",
    "--set",
    "model.d_max=8",
    "--set",
    "search.retrain.top=1",
    "--no-progress",
]


def shop_csv(tmp: Path) -> Path:
    """60 customers, 40 products, 3-12 purchases each, ISO dates, a quoted free-text column."""
    rng = np.random.default_rng(0)
    rows = ["customer_id;product_id;bought_at;review"]
    for u in range(60):
        for _ in range(int(rng.integers(3, 13))):
            day = int(rng.integers(1, 28))
            rows.append(f'C{u:03d};P{int(rng.integers(0, 40))};2024-03-{day:02d};"ok; ""fine"""')
    path = tmp / "shop.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


DATA_FLAGS = ["--user-col", "customer_id", "--item-col", "product_id", "--time-col", "bought_at"]


@pytest.mark.slow
def test_train_and_search_on_a_custom_csv_with_flags_only(tmp_path: Path, capsys) -> None:
    data = shop_csv(tmp_path)
    common = ["--dataset", str(data), *DATA_FLAGS, "--sep", ";", *TINY]
    train = tmp_path / "train"
    assert main(["train", "--out", str(train), "--protocol", "temporal", *common]) == 0
    res = RunResult.read(train / "results.json")
    assert res.protocol == "temporal"
    cfg_text = (train / "config.yaml").read_text()
    for key in ("user_col: customer_id", "time_col: bought_at", "protocol: temporal"):
        assert key in cfg_text
    search = tmp_path / "search"
    argv = ["search", "--out", str(search), "--protocol", "leave-last-out", "--sparsity", "0.5"]
    assert main([*argv, *common, "--set", "data.min_user_interactions=3"]) == 0
    res = RunResult.read(search / "results.json")
    assert res.protocol == "leave-last-out"
    assert res.usage.params <= res.usage.params_budget
    assert "method bet" in capsys.readouterr().out


def test_bad_column_name_lists_the_columns(tmp_path: Path, capsys) -> None:
    data = shop_csv(tmp_path)
    argv = ["train", "--out", str(tmp_path / "r"), "--dataset", str(data), *TINY]
    rc = main([*argv, "--user-col", "customer", "--item-col", "product_id"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "customer_id" in err and "bought_at" in err and "'customer'" in err


def test_time_protocol_without_time_col_is_a_config_error(tmp_path: Path, capsys) -> None:
    data = shop_csv(tmp_path)
    argv = ["train", "--out", str(tmp_path / "r"), "--dataset", str(data), *TINY]
    assert main([*argv, "--protocol", "temporal"]) == 2
    assert "--time-col" in capsys.readouterr().err


def test_data_stats_with_flags(tmp_path: Path, capsys) -> None:
    data = shop_csv(tmp_path)
    argv = ["data", "stats", str(data), *DATA_FLAGS, "--protocol", "leave-last-out", "--json"]
    assert main([*argv, "--min-user-interactions", "5"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["test"] == st["valid"] == st["users"]
