"""The typed run result: JSON round trip, schema validation, the grid's record format, and the
report and the CLI's help where torch cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embudget.bench import records
from embudget.bench.cells import Cell, cell_config
from embudget.budget.usage import ResolvedBudget, Usage
from embudget.errors import ResultError, RunDirError
from embudget.result import (
    RESULT_SCHEMA,
    Chosen,
    Evaluation,
    Metrics,
    RunResult,
    Timing,
    Training,
)

ROOT = Path(__file__).resolve().parents[1]
#: makes ``import torch`` (and everything that imports it) fail in a subprocess: a meta-path
#: finder rather than ``sys.modules["torch"] = None``, which scipy's array-API helpers trip over
NO_TORCH = """
import sys


class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"{name} is blocked: this process must work without torch")
        return None


sys.meta_path.insert(0, _NoTorch())
"""


def sample(**changes: Any) -> RunResult:
    """A search result at sparsity 0.8 on a 3 x 2 toy table."""
    budget = ResolvedBudget.resolve(sparsity=0.8, n_users=3, n_items=2, d_max=10)
    usage = Usage.of_sizes(np.array([2, 2, 1]), np.array([3, 2]), budget=budget, dense_params=7)
    result = RunResult(
        kind="search",
        method="bet",
        dataset="toy",
        protocol="paper",
        split_fingerprint="ab" * 32,
        backbone="mf",
        seed=1,
        config_hash="0123456789abcdef",
        embudget_version="0.1.0",
        torch_version="2.0.0+cpu",
        device="cpu",
        sparsity=0.8,
        kept_fraction=None,
        budgeted=True,
        usage=usage,
        storage="compact",
        valid=Metrics({"recall@20": 0.25, "ndcg@20": 0.125, "quality": 0.2}, 3),
        test=Metrics({"recall@20": 1 / 3, "ndcg@20": 0.1, "quality": 0.3}, 2),
        timing=Timing(data=0.5, pretrain=1.0, search=2.0, retrain=3.0, total=7.0),
        chosen=Chosen("retrain-t4", 0.2),
        theta0_valid={"recall@20": 0.5, "quality": 0.4},
        n_probes=6,
    )
    return replace(result, **changes)


def test_round_trip_through_json_and_the_file(tmp_path: Path) -> None:
    train = sample(
        kind="train",
        method=None,
        sparsity=None,
        budgeted=False,
        chosen=None,
        theta0_valid=None,
        n_probes=0,
        training=Training(
            steps=120,
            best_step=80,
            stopped_early=True,
            history=(
                Evaluation(step=0, loss=None, valid={"quality": 0.1}, improved=True),
                Evaluation(step=80, loss=0.25, valid={"quality": 0.2}, improved=True),
                Evaluation(step=120, loss=0.125, valid={"quality": 0.15}, improved=False),
            ),
        ),
        timing=Timing(data=0.1, train=5.0, total=5.5),
    )
    for res in (sample(), train):
        d = res.to_dict()
        assert d["schema"] == RESULT_SCHEMA and next(iter(d)) == "schema"
        assert RunResult.from_dict(json.loads(json.dumps(d))) == res
        res.write(tmp_path / "results.json")
        assert RunResult.read(tmp_path / "results.json") == res
    back = RunResult.read(tmp_path / "results.json")
    assert back.test.means["recall@20"] == 1 / 3  # floats survive exactly
    assert back.usage.params == 10 and back.usage.params_budget == 10
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write leaves no temporary file


@pytest.mark.parametrize(
    ("history", "message"),
    [
        ({}, "training.history must be a list, not dict"),
        ([{"step": 1, "loss": None, "valid": {}}], r"training.history\[0\].improved is missing"),
        (
            [{"step": 1, "loss": "x", "valid": {}, "improved": True}],
            r"training.history\[0\].loss must be float, not str",
        ),
    ],
)
def test_a_malformed_curve_is_named(history: Any, message: str) -> None:
    d = {"steps": 1, "best_step": 1, "stopped_early": False, "history": history}
    with pytest.raises(ResultError, match=message):
        Training.from_dict(d)
    assert Training.from_dict({k: v for k, v in d.items() if k != "history"}).history == ()


def _with(d: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``d`` with the dotted ``path`` set (``...`` deletes it)."""
    out = json.loads(json.dumps(d))
    *parents, last = path.split(".")
    node = out
    for p in parents:
        node = node[p]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return out


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("schema", ..., "no schema version"),
        ("schema", 2, "schema 2"),
        ("dataset", ..., "dataset is missing"),
        ("seed", "1", "seed must be int, not str"),
        ("seed", True, "seed must be an integer, not a boolean"),
        ("kind", "grid", "kind is 'grid'"),
        ("test.means.recall@20", None, "test.means.recall@20 must be float, not null"),
        ("valid.n_users_evaluated", 2.5, "valid.n_users_evaluated must be int"),
        ("timing", [], "timing must be an object"),
        ("chosen.name", ..., "chosen.name is missing"),
        ("usage.bytes", ..., "usage is not a valid usage record"),
        ("surprise", 1, "unknown field(s) surprise"),
    ],
)
def test_a_wrong_or_missing_field_is_a_clear_error(path: str, value: Any, message: str) -> None:
    bad = _with(sample().to_dict(), path, value)
    with pytest.raises(ResultError, match="results.json") as e:
        RunResult.from_dict(bad)
    assert message in str(e.value)


def test_unreadable_files_are_clear_errors(tmp_path: Path) -> None:
    assert issubclass(ResultError, RunDirError)  # callers that catch RunDirError still do
    with pytest.raises(ResultError, match="does not exist"):
        RunResult.read(tmp_path / "results.json")
    (tmp_path / "results.json").write_text('{"schema": 1,')
    with pytest.raises(ResultError, match="not valid JSON"):
        RunResult.read(tmp_path / "results.json")
    (tmp_path / "results.json").write_text("[1, 2]")
    with pytest.raises(ResultError, match="must hold a JSON object"):
        RunResult.read(tmp_path / "results.json")
    (tmp_path / "results.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(ResultError, match="cannot be read"):
        RunResult.read(tmp_path / "results.json")


def _grid_dir(tmp_path: Path, edit: Any = None) -> Path:
    """A results directory with one finished cell; ``edit(record)`` changes each record."""
    res = sample()
    cell = Cell("toy", "mf", "bet", 0.8, 1)
    lines = records.result_records(cell, cell_config(cell), res, "runs/x")
    for line in lines:
        if edit is not None:
            edit(line)
    out = tmp_path / "res"
    out.mkdir(parents=True)
    (out / records.RESULTS_FILE).write_text("".join(json.dumps(x) + "\n" for x in lines))
    return out


def test_grid_records_of_another_schema_or_shape_are_result_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from embudget.bench.aggregate import build_tables
    from embudget.cli import main

    other = _grid_dir(tmp_path / "a", lambda r: r.update(schema=2))
    with pytest.raises(ResultError, match="schema 2; this embudget reads schema 1"):
        records.load_results(other / records.RESULTS_FILE)
    no_id = _grid_dir(tmp_path / "b", lambda r: r.pop("run_id"))
    with pytest.raises(ResultError, match="lacks the field"):
        records.load_results(no_id / records.RESULTS_FILE)
    not_a_record = tmp_path / "c.jsonl"
    not_a_record.write_text("[1, 2]\n")
    with pytest.raises(ResultError, match="not a record"):
        records.load_results(not_a_record)
    no_device = _grid_dir(tmp_path / "d", lambda r: r.pop("device"))
    with pytest.raises(ResultError, match="lacks the field 'device'"):
        build_tables(no_device)
    bad_seed = _grid_dir(tmp_path / "e", lambda r: r.update(seed="one"))
    with pytest.raises(ResultError, match="wrong type"):
        build_tables(bad_seed)
    # bad input for the command line: exit code 2 and the message
    assert main(["report", str(other)]) == 2
    assert "schema 2" in capsys.readouterr().err


def test_records_keep_the_committed_format() -> None:
    """``embudget report`` reads committed results.jsonl files: same fields, same order, plus
    how the fits ended (absent from the first committed files)."""
    committed = ROOT / "results" / "gowalla-mf" / "results.jsonl"
    if not committed.is_file():
        pytest.skip("no committed results")
    first = json.loads(committed.read_text().splitlines()[0])
    res = sample()
    cell = Cell("toy", "mf", "bet", 0.8, 1)
    lines = records.result_records(cell, cell_config(cell), res, "runs/x")
    assert [k for k in lines[0] if k not in records.FIT_FIELDS] == list(first)
    assert {k: lines[0][k] for k in records.FIT_FIELDS} == dict.fromkeys(records.FIT_FIELDS)
    assert len(lines) == 6 == lines[0]["n_records"]
    by = {(r["split"], r["metric"], r["k"]): r for r in lines}
    assert by[("test", "recall", 20)]["value"] == 1 / 3
    assert by[("valid", "quality", None)]["n_users_evaluated"] == 3
    r = lines[0]
    assert (r["budget_params"], r["params_used"], r["bytes_used"]) == (10, 10, 4 * 10 + 8 * 7)
    assert r["fraction_of_full"] == 10 / 50 and r["dense_params"] == 7
    assert (r["time_search_s"], r["n_probes"], r["torch_version"]) == (2.0, 6, "2.0.0+cpu")


def _run_without_torch(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", NO_TORCH + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_report_runs_where_torch_cannot_be_imported(tmp_path: Path) -> None:
    out = tmp_path / "res"
    users = np.arange(20)
    rng = np.random.default_rng(0)
    for method, level in (("su", 0.1), ("bet", 0.12)):
        for seed in (0, 1):
            cell = Cell("toy", "mf", method, 0.8, seed)
            run_dir = f"runs/{cell.cell_id}"
            per_user = {"recall@20": (level + 0.05 * rng.random(20)).astype(np.float32)}
            (out / run_dir).mkdir(parents=True)
            np.savez(out / run_dir / "per_user_test.npz", users=users, **per_user)
            res = sample(method=method, seed=seed, test=Metrics({"recall@20": level}, 20))
            lines = records.result_records(cell, cell_config(cell), res, run_dir)
            with open(out / records.RESULTS_FILE, "a") as f:
                f.write("".join(json.dumps(x) + "\n" for x in lines))
    proc = _run_without_torch(
        f"""
        from embudget.cli import main
        rc = main(["report", {str(out)!r}])
        assert "torch" not in sys.modules
        sys.exit(rc)
        """
    )
    assert proc.returncode == 0, proc.stderr
    md = (out / "report.md").read_text()
    assert "### toy (paper), mf" in md and "| 0.8 | BET |" in md
    assert "Paired t-tests" in md  # the per-user scores were read and compared


def test_report_reads_the_committed_results_without_torch(tmp_path: Path) -> None:
    committed = ROOT / "results" / "gowalla-mf"
    if not (committed / "results.jsonl").is_file():
        pytest.skip("no committed results")
    proc = _run_without_torch(
        f"""
        from embudget.bench.report import write_report
        rep = write_report({str(committed)!r}, {str(tmp_path / "report.md")!r})
        assert rep.tables and rep.tables[0].dataset == "gowalla"
        """
    )
    assert proc.returncode == 0, proc.stderr


def test_help_imports_no_torch() -> None:
    proc = _run_without_torch(
        """
        from embudget.cli import main
        try:
            main(["--help"])
        except SystemExit as e:
            sys.exit(e.code)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "report" in proc.stdout and "search" in proc.stdout


def test_a_resumed_runs_total_time_is_at_least_the_sum_of_its_phases() -> None:
    start = time.perf_counter()
    # fresh: the wall clock of this process, which is at least the (small) phases
    fresh = Timing.measured(start - 5.0, data=1.0, retrain=2.0)
    assert fresh.total >= 5.0 and (fresh.data, fresh.retrain) == (1.0, 2.0)
    # resumed: the retraining carried 33,051 s of earlier processes; this one ran 5 s
    resumed = Timing.measured(start - 5.0, data=1.0, retrain=33_051.0)
    assert resumed.total == 33_052.0
