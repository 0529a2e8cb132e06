"""Probes and grid cells on a local Ray (``--workers``): equal to the serial runs bit for bit.

One local Ray with 2 CPUs serves the whole module (starting one takes seconds). The runs are
the golden runs' settings, shortened: gowalla-mini, d_max 32, one torch thread.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from embudget.bench.grid import Settings, load_results, run_grid
from embudget.cli import main
from embudget.config import load_config
from embudget.pipeline.run import run_search
from embudget.result import RunResult
from embudget.search.parallel import (
    RayPool,
    RayUnavailableError,
    active_pool,
    import_ray,
    ray_workers,
)

sys.path.insert(0, str(Path(__file__).resolve().parent / "golden"))
from cases import extract  # noqa: E402

pytestmark = pytest.mark.distributed

#: the golden runs' settings with fewer steps; 5 iterations include one random selection (t=3)
TINY = [
    "data.name=gowalla-mini",
    "model.d_max=32",
    "train.batch_users=256",
    "train.eval_every_steps=20",
    "train.patience=1",
    "train.max_steps=40",
    "search.iterations=5",
    "search.sampler.candidates=16",
    "search.retrain.top=1",
    "search.probe.steps=20",
    "budget.sparsity=0.8",
    "threads=1",
]


#: the variant: 4 iterations of 2 probes (iteration 3 selects at random)
Q2 = ("search.probes_per_iteration=2", "search.iterations=4")


@pytest.fixture(scope="module")
def ray_2cpus() -> Iterator[None]:
    """A local Ray with 2 CPUs for the module; ``ray_workers(2)`` then uses it as it is."""
    ray = pytest.importorskip("ray")

    tmp = tempfile.mkdtemp(prefix="embudget-ray-")  # short: Ray's socket paths must fit
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(num_cpus=2, _temp_dir=tmp, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def _search(out: Path, cache: Path, *extra: str) -> RunResult:
    cfg = load_config(overrides=[*TINY, *extra, f"cache_dir={cache}"], fast=False)
    return run_search(cfg, out, progress=False)


def _history(run: Path) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    for line in lines:
        del line["seconds"]  # wall times differ; everything else is computed
    return lines


@pytest.mark.parametrize("method", ["bet", "bet-random"])
def test_two_workers_with_one_probe_equal_the_serial_search(
    ray_2cpus: None, tmp_path: Path, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    _search(tmp_path / "serial", tmp_path / "cache-serial", f"search.method={method}")
    with ray_workers(2) as pool, caplog.at_level(logging.DEBUG, "embudget.search.parallel"):
        assert active_pool() == pool == RayPool(workers=2, cpus=2)
        _search(tmp_path / "ray", tmp_path / "cache-ray", f"search.method={method}")
    assert active_pool() is None
    # the random-selection iterations ran beside the chain: t = 3 for bet, all for bet-random
    ahead = [r.getMessage() for r in caplog.records if "probed ahead" in r.getMessage()]
    assert ahead and all(m.startswith("iteration 3 ") for m in ahead) == (method == "bet")
    assert extract(tmp_path / "ray") == extract(tmp_path / "serial")
    assert _history(tmp_path / "ray") == _history(tmp_path / "serial")


def test_two_probes_per_iteration_meet_the_budget_and_equal_their_serial_run(
    ray_2cpus: None, tmp_path: Path
) -> None:
    with ray_workers(2):
        res = _search(tmp_path / "ray", tmp_path / "cache", *Q2)
    assert res.n_probes == 8
    assert res.usage.params <= res.usage.params_budget
    history = _history(tmp_path / "ray")
    assert [h["t"] for h in history] == list(range(8))
    assert [h["iteration"] for h in history] == [t // 2 for t in range(8)]
    for it in range(4):  # two different actions per iteration
        a, b = history[2 * it], history[2 * it + 1]
        assert (a["hist_u"], a["hist_v"]) != (b["hist_u"], b["hist_v"])
    assert history[7]["strategy"] == "random"
    # the same variant without workers: the same probes, one after another
    _search(tmp_path / "serial", tmp_path / "cache", *Q2)
    assert extract(tmp_path / "ray") == extract(tmp_path / "serial")
    assert _history(tmp_path / "ray") == _history(tmp_path / "serial")


def _grid(out: Path, cache: Path) -> Any:
    settings = Settings(overrides=(*TINY, f"cache_dir={cache}"))
    return run_grid(
        settings,
        out,
        datasets=["gowalla-mini"],
        models=["mf"],
        methods=["su", "sr"],
        sparsities=[0.8],
        seeds=[0],
    )


def _comparable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        ({k: v for k, v in r.items() if not k.startswith("time_")} for r in records),
        key=lambda r: (r["cell_id"], r["split"], r["metric"], r["k"] or 0),
    )


def test_a_two_worker_bench_equals_the_serial_bench_and_resumes(
    ray_2cpus: None, tmp_path: Path
) -> None:
    _grid(tmp_path / "serial", tmp_path / "cache-serial")
    with ray_workers(2):
        summary = _grid(tmp_path / "ray", tmp_path / "cache-ray")
    assert sorted(summary.ran) == ["gowalla-mini-mf-sr-s0.8-seed0", "gowalla-mini-mf-su-s0.8-seed0"]
    serial = load_results(tmp_path / "serial" / "results.jsonl")
    assert _comparable(load_results(tmp_path / "ray" / "results.jsonl")) == _comparable(serial)

    text = (tmp_path / "ray" / "results.jsonl").read_text()
    with ray_workers(2):
        again = _grid(tmp_path / "ray", tmp_path / "cache-ray")
    assert again.ran == [] and len(again.skipped) == 2
    assert (tmp_path / "ray" / "results.jsonl").read_text() == text


def test_workers_without_ray_installed_is_a_typed_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(RayUnavailableError, match=r"pip install 'embudget\[ray\]'"):
        import_ray()
    argv = ["search", "--dataset", "gowalla-mini", "--out", str(tmp_path / "run"), "--workers", "2"]
    assert main(argv) == 2
    assert "pip install 'embudget[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
