"""The grid runner (embudget bench): cell expansion, long-format records, resumption after a kill,
on gowalla-mini with tiny settings."""

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from embudget.bench import grid
from embudget.cli import main
from embudget.config import FAST_BY_DEFAULT, load_config
from embudget.errors import ConfigError
from embudget.io import file_lock
from embudget.pipeline import run as loop
from embudget.result import RunResult
from embudget.search.actions import Action
from embudget.search.loop import Searcher

TINY = [
    "model.d_max=16",
    "train.batch_users=1000",
    "train.eval_every_steps=20",
    "train.patience=1",
    "train.max_steps=40",
    "search.iterations=3",
    "search.sampler.candidates=4",
    "search.probe.epochs=0",
    "search.retrain.top=1",
    "search.probe.user_fraction=0.3",
]
GRID: dict[str, Any] = {
    "datasets": ["gowalla-mini"],
    "models": ["mf"],
    "methods": ["full", "su", "bet"],
    "sparsities": [0.8],
    "seeds": [0],
}


def _base(tmp_path: Path, *extra: str) -> grid.Settings:
    return grid.Settings(overrides=(*TINY, f"cache_dir={tmp_path / 'cache'}", *extra))


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


class Counter:
    """Wraps run_search: counts calls, records resume flags, dies before call ``die_at``."""

    def __init__(self, die_at: int | None = None) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.die_at = die_at

    def __call__(self, cfg: Any, out: Path, **kw: Any) -> RunResult:
        if self.die_at is not None and len(self.calls) + 1 == self.die_at:
            raise KeyboardInterrupt
        self.calls.append((Path(out).name, kw["resume"]))
        return loop.run_search(cfg, out, **kw)


def test_expand_grid_order_and_full_once_per_seed() -> None:
    cells = grid.expand_grid(
        ["gowalla-mini", "gowalla"], ["mf"], ["bet", "su", "full"], [0.8, 0.9], [0, 1]
    )
    full = [c for c in cells if c.method == "full"]
    assert len(full) == 2 * 2  # datasets x seeds, not x sparsities
    assert all(c.sparsity is None for c in full)
    assert len(cells) == 4 + 2 * (2 * 2 * 2)  # full + (su, bet) x datasets x sparsities x seeds
    cheap = [i for i, c in enumerate(cells) if c.method in ("full", "su")]
    assert cheap == list(range(len(cheap)))  # every cheap cell before any search
    ids = [c.cell_id for c in cells]
    assert len(set(ids)) == len(ids)
    assert ids[0] == "gowalla-mini-mf-full-seed0"
    assert "gowalla-mini-mf-bet-s0.9-seed1" in ids
    # searches: sparsity outer, seed inner, so a row's seeds finish together
    bet = [(c.sparsity, c.seed) for c in cells if c.method == "bet" and c.dataset == "gowalla-mini"]
    assert bet == [(0.8, 0), (0.8, 1), (0.9, 0), (0.9, 1)]


@pytest.mark.parametrize(
    "kw",
    [
        {"methods": ["bet", "magic"]},
        {"sparsities": [1.2]},
        {"sparsities": []},
        {"seeds": [0, 0]},
        {"models": []},
    ],
)
def test_expand_grid_rejects_bad_grids(kw: dict[str, Any]) -> None:
    args = {**GRID, **kw}
    with pytest.raises(ConfigError):
        grid.expand_grid(
            args["datasets"], args["models"], args["methods"], args["sparsities"], args["seeds"]
        )


def test_cell_config_sets_the_cell_and_keeps_the_base(tmp_path: Path) -> None:
    base = _base(tmp_path, "train.lr=0.01")
    cfg = grid.cell_config(grid.Cell("gowalla-mini", "ncf", "su", 0.9, 2), base)
    got = (cfg.data.name, cfg.model.name, cfg.search.method, cfg.seed)
    assert got == ("gowalla-mini", "ncf", "su", 2)
    assert cfg.budget.sparsity == 0.9 and cfg.train.lr == 0.01 and cfg.model.d_max == 16
    full = grid.cell_config(grid.Cell("gowalla-mini", "mf", "full", None, 0), base)
    assert full.budget.sparsity == 0.0
    assert grid.deviations(cfg)["train.lr"] == 0.01
    assert grid.preset(cfg) == "faithful"  # a setting changed: not fast mode
    fast = grid.cell_config(
        grid.Cell("gowalla-mini", "lightgcn", "bet", 0.9, 0), grid.Settings(fast=True)
    )
    assert grid.preset(fast) == "fast"
    # each backbone gets its own defaults, as `embudget search --model X` would
    for model in ("mf", "ncf", "lightgcn"):
        cell = grid.cell_config(grid.Cell("gowalla-mini", model, "bet", 0.8, 0))
        assert cell.train == load_config(overrides=[f"model.name={model}"], fast=False).train
        assert grid.preset(cell) == "faithful" and grid.deviations(cell) == {}
        # the command line's default (fast=None): fast mode where config.FAST_BY_DEFAULT says
        auto = grid.cell_config(
            grid.Cell("gowalla-mini", model, "bet", 0.8, 0), grid.Settings(fast=None)
        )
        assert grid.preset(auto) == ("fast" if model in FAST_BY_DEFAULT else "faithful")
    dev = grid.cell_config(
        grid.Cell("x", "mf", "bet", 0.8, 0), grid.Settings(updates={"device": "cuda"})
    )
    assert dev.device == "cuda" and grid.preset(dev) == "faithful"
    # the grid owns the cell keys
    for clash in ("model.name=ncf", "search.method=su", "seed=3", "budget.sparsity=0.5"):
        with pytest.raises(ConfigError, match="grid sets it per cell"):
            grid.cell_config(grid.Cell("gowalla-mini", "mf", "bet", 0.8, 0), _base(tmp_path, clash))


def test_grid_resumes_after_a_kill_without_redoing_finished_cells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "results"
    base = _base(tmp_path)
    # killed before the third cell (bet) starts: full and su are recorded
    first = Counter(die_at=3)
    monkeypatch.setattr(grid, "run_search", first)
    with pytest.raises(KeyboardInterrupt):
        grid.run_grid(base, out, **GRID)
    cells = grid.expand_grid(**GRID)
    expected = [f"{c.cell_id}-{grid.cell_config(c, base).hash()[:8]}" for c in cells[:2]]
    assert [c for c, _ in first.calls] == expected
    assert expected[0].startswith("gowalla-mini-mf-full-seed0-")
    assert expected[1].startswith("gowalla-mini-mf-su-s0.8-seed0-")
    recs = _lines(out / "results.jsonl")
    assert {r["cell_id"] for r in recs} == {
        "gowalla-mini-mf-full-seed0",
        "gowalla-mini-mf-su-s0.8-seed0",
    }

    # killed inside the bet cell, during its second search iteration
    real_probe = Searcher.probe

    def probe_then_die(self: Searcher, action: Action, t: int) -> tuple:
        if t == 1:
            raise KeyboardInterrupt
        return real_probe(self, action, t)

    second = Counter()
    monkeypatch.setattr(grid, "run_search", second)
    monkeypatch.setattr(Searcher, "probe", probe_then_die)
    with pytest.raises(KeyboardInterrupt):
        grid.run_grid(base, out, **GRID)
    assert len(second.calls) == 1 and second.calls[0][0].startswith(
        "gowalla-mini-mf-bet-s0.8-seed0"
    )
    bet_dir = out / "runs" / second.calls[0][0]
    hist0 = _lines(bet_dir / "history.jsonl")
    assert [h["t"] for h in hist0] == [0]
    assert len(_lines(out / "results.jsonl")) == len(recs)  # nothing recorded for bet

    # rerun: only the bet cell runs, resumed from its run directory at iteration 1
    monkeypatch.setattr(Searcher, "probe", real_probe)
    third = Counter()
    monkeypatch.setattr(grid, "run_search", third)
    summary = grid.run_grid(base, out, **GRID)
    assert third.calls == [(bet_dir.name, True)]
    assert summary.ran == ["gowalla-mini-mf-bet-s0.8-seed0"]
    assert summary.skipped == ["gowalla-mini-mf-full-seed0", "gowalla-mini-mf-su-s0.8-seed0"]
    hist = _lines(bet_dir / "history.jsonl")
    assert [h["t"] for h in hist] == [0, 1, 2]
    assert hist[0] == hist0[0]  # iteration 0 was not redone (its timings are unchanged)
    recs = _lines(out / "results.jsonl")
    assert recs[: len(summary.records)] == summary.records
    per_cell: dict[str, int] = {}
    for r in recs:
        per_cell[r["cell_id"]] = per_cell.get(r["cell_id"], 0) + 1
    assert set(per_cell) == {c.cell_id for c in grid.expand_grid(**GRID)}
    assert all(n == recs[0]["n_records"] for n in per_cell.values())  # no duplicates

    # everything done: a rerun runs nothing
    fourth = Counter()
    monkeypatch.setattr(grid, "run_search", fourth)
    assert grid.run_grid(base, out, **GRID).ran == [] and fourth.calls == []
    # another setting is another config hash: those cells run again
    changed = grid.run_grid(_base(tmp_path, "train.lr=0.02"), out, **{**GRID, "methods": ["su"]})
    assert changed.ran == ["gowalla-mini-mf-su-s0.8-seed0"] and len(fourth.calls) == 1


def _run_dir_name(cell_index: int, base: grid.Settings) -> str:
    cell = grid.expand_grid(**GRID)[cell_index]
    return f"{cell.cell_id}-{grid.cell_config(cell, base).hash()[:8]}"


def test_two_processes_share_a_grid_without_running_a_cell_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "results"
    base = _base(tmp_path)
    grid_su = {**GRID, "methods": ["full", "su"]}
    (out / "runs").mkdir(parents=True)
    full_lock = out / "runs" / (_run_dir_name(0, base) + ".lock")
    calls = Counter()
    monkeypatch.setattr(grid, "run_search", calls)

    # the full cell is held by another process: this one leaves it and runs su
    with file_lock(full_lock, wait=False) as held:
        assert held
        summary = grid.run_grid(base, out, **grid_su)
    assert summary.busy == ["gowalla-mini-mf-full-seed0"] and summary.ran == [
        "gowalla-mini-mf-su-s0.8-seed0"
    ]
    assert [c for c, _ in calls.calls] == [_run_dir_name(1, base)]

    # a cell another process finished after this one started is not run again: while this
    # process runs full, "another" one (a nested run_grid) finishes bet
    def full_then_other_finishes_bet(cfg: Any, run_dir: Path, **kw: Any) -> RunResult:
        res = calls(cfg, run_dir, **kw)
        if Path(run_dir).name == _run_dir_name(0, base):
            other = grid.run_grid(base, out, **{**GRID, "methods": ["bet"]})
            assert other.ran == ["gowalla-mini-mf-bet-s0.8-seed0"]
        return res

    monkeypatch.setattr(grid, "run_search", full_then_other_finishes_bet)
    calls.calls.clear()
    summary = grid.run_grid(base, out, **GRID)
    assert summary.ran == ["gowalla-mini-mf-full-seed0"]
    assert summary.skipped == ["gowalla-mini-mf-su-s0.8-seed0", "gowalla-mini-mf-bet-s0.8-seed0"]
    assert [c for c, _ in calls.calls] == [_run_dir_name(i, base) for i in (0, 2)]  # bet once
    per_cell: dict[str, int] = {}
    for r in _lines(out / "results.jsonl"):
        per_cell[r["cell_id"]] = per_cell.get(r["cell_id"], 0) + 1
    assert len(per_cell) == 3 and len(set(per_cell.values())) == 1  # each cell once, complete


def test_records_are_long_format_and_match_the_run(tmp_path: Path) -> None:
    out = tmp_path / "results"
    summary = grid.run_grid(_base(tmp_path), out, **{**GRID, "methods": ["full", "su"]})
    recs = _lines(out / "results.jsonl")
    assert recs == summary.records
    for cell_id in ("gowalla-mini-mf-full-seed0", "gowalla-mini-mf-su-s0.8-seed0"):
        mine = [r for r in recs if r["cell_id"] == cell_id]
        res = RunResult.read(out / mine[0]["run_dir"] / "results.json")
        assert len(mine) == mine[0]["n_records"] == 2 * len(res.test.means)
        for r in mine:
            name = r["metric"] if r["k"] is None else f"{r['metric']}@{r['k']}"
            metrics = res.valid if r["split"] == "valid" else res.test
            assert r["value"] == metrics.means[name]
            assert r["n_users_evaluated"] == metrics.n_users_evaluated
            assert r["config_hash"] == res.config_hash and r["backbone"] == "mf"
            assert r["params_used"] == res.usage.params
            assert r["time_search_s"] == res.timing.search == 0.0
            assert r["torch_version"] == res.torch_version == torch.__version__
            assert r["schema"] == 1 and r["preset"] == "faithful" and r["split_seed"] == 42
            assert res.training is not None  # the kept model's fit (Θ0 for full)
            assert r["steps"] == res.training.steps and r["best_step"] == res.training.best_step
            assert r["stopped_early"] == res.training.stopped_early
            theta0 = res.theta0_training  # SU trains from scratch: no Θ0
            assert (r["theta0_steps"] is None) == (theta0 is None) == (r["method"] == "su")
            if theta0 is not None:
                assert r["theta0_stopped_early"] == theta0.stopped_early == r["stopped_early"]
        assert {(r["split"], r["metric"], r["k"]) for r in mine} >= {
            ("test", "recall", 20),
            ("valid", "ndcg", 5),
            ("test", "quality", None),
        }
    full = next(r for r in recs if r["method"] == "full")
    assert full["fraction_of_full"] == 1.0 and full["params_used"] == full["budget_params"]
    su = next(r for r in recs if r["method"] == "su")
    assert su["sparsity"] == 0.8 and su["params_used"] <= su["budget_params"]


def test_torn_write_is_dropped_and_the_cell_rerun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "results"
    g = {**GRID, "methods": ["su"]}
    grid.run_grid(_base(tmp_path), out, **g)
    path = out / "results.jsonl"
    good = path.read_text().splitlines(keepends=True)
    # a kill in the middle of the cell's write: half its lines, the last one cut
    path.write_text("".join(good[:3]) + good[3][:40])
    assert grid.load_results(path) == []
    counter = Counter()
    monkeypatch.setattr(grid, "run_search", counter)
    summary = grid.run_grid(_base(tmp_path), out, **g)
    assert summary.ran == ["gowalla-mini-mf-su-s0.8-seed0"]
    assert counter.calls[0][1] is True  # its finished run dir is reused, not retrained
    assert path.read_text().splitlines(keepends=True) == good


def test_bench_cli_runs_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    args = ["bench", "--datasets", "gowalla-mini", "--models", "mf", "--methods", "full,su"]
    args += ["--sparsities", "0.8", "--seeds", "0", "--out", str(out), "--no-progress"]
    args += [x for s in [*TINY, f"cache_dir={tmp_path / 'cache'}"] for x in ("--set", s)]
    assert main(args) == 0
    assert "2 cells run, 0 already done" in capsys.readouterr().out
    assert main(args) == 0
    assert "0 cells run, 2 already done" in capsys.readouterr().out
    assert main([*args, "--set", "no.such_key=1"]) == 2
    assert main([*args, "--methods", "full,wat"]) == 2  # the last --methods wins
    with pytest.raises(SystemExit):  # argparse: not a number
        main([*args, "--sparsities", "0.8,x"])
