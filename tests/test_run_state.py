"""Damaged, interrupted and failed run directories (tiny searches on gowalla-mini).

- every file a resume reads, damaged, gives a DamagedFileError (a RunDirError) naming the file
  and the fix;
- a damaged cached Θ0 is rebuilt, never trusted;
- ``history.jsonl`` after a resume has one line per iteration, equal to an uninterrupted run's
  (timings aside), whatever happened to it;
- a directory holding only a failed run is reused by the next run;
- searches killed at random points (exceptions, and SIGKILL of a subprocess) resume to the
  results of an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from embudget.config import RunConfig, load_config
from embudget.errors import DamagedFileError, DataFormatError, ResultError, RunDirError
from embudget.io import file_lock, load_npz, load_safetensors, load_torch, read_json, read_jsonl
from embudget.pipeline import run as runner
from embudget.pipeline.pretrain import checksum_path
from embudget.result import RunResult
from embudget.search.loop import Searcher
from embudget.training import fit as fit_module

TINY = [
    "data.name=gowalla-mini",
    "model.name=mf",
    "model.d_max=8",
    "threads=1",
    "train.batch_users=1000",
    "train.eval_every_steps=10",
    "train.patience=1",
    "train.max_steps=20",
    "search.iterations=4",
    "search.sampler.candidates=6",
    "search.probe.steps=2",
    "search.retrain.top=2",
    "search.probe.user_fraction=0.3",
    "budget.sparsity=0.8",
]


def _cfg(cache: Path, *extra: str) -> RunConfig:
    return load_config(overrides=[*TINY, f"cache_dir={cache}", *extra], fast=False)


def _history(run: Path, timings: bool = False) -> list[dict[str, Any]]:
    lines = (run / "history.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    return recs if timings else [{k: v for k, v in r.items() if k != "seconds"} for r in recs]


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunResult, Path]:
    """An uninterrupted search: its directory, result and (filled) Θ0 cache."""
    base = tmp_path_factory.mktemp("ref")
    res = runner.run_search(_cfg(base / "cache"), base / "run", progress=False)
    return base / "run", res, base / "cache"


def _same_run(run: Path, res: RunResult, ref: tuple[Path, RunResult, Path]) -> None:
    ref_run, ref_res, _ = ref
    assert res.test == ref_res.test and res.valid == ref_res.valid
    assert res.chosen == ref_res.chosen
    # the fits' records (steps, curves, losses) too, whichever stage was resumed
    assert res.training == ref_res.training and res.theta0_training == ref_res.theta0_training
    a, b = load_npz(run / "sizes.npz"), load_npz(ref_run / "sizes.npz")
    assert all(np.array_equal(a[k], b[k]) for k in b)
    assert _history(run) == _history(ref_run)
    assert len(_history(run)) == 4


def test_a_search_records_how_its_fits_ended(
    tmp_path: Path, ref: tuple[Path, RunResult, Path]
) -> None:
    """Θ0's fit and the kept model's, with their validation curves; a Θ0 loaded from the cache
    brings its record, and a cache entry written before records were kept still loads."""
    ref_run, res, cache = ref
    for fit in (res.theta0_training, res.training):
        assert fit is not None and fit.history
        assert [e.step for e in fit.history] == list(range(10, fit.steps + 1, 10))
        assert fit.best_step in [e.step for e in fit.history]
        best = max(fit.history, key=lambda e: e.valid["quality"])
        assert best.step == fit.best_step and best.improved
        assert fit.stopped_early == (fit.steps < 20)  # TINY: patience 1, at most 20 steps
        assert all(e.loss is not None and e.loss > 0 for e in fit.history)
    assert res.training is not None and res.chosen is not None
    logged = [json.loads(line) for line in (ref_run / "retrain.jsonl").read_text().splitlines()]
    (kept,) = [d for d in logged if d["name"] == res.chosen.name]
    assert kept["training"] == res.training.to_dict()
    assert RunResult.read(ref_run / "results.json") == res

    old = tmp_path / "cache"
    shutil.copytree(cache, old)
    (theta0,) = old.glob("pretrain-*[0-9a-f].pt")
    blob = load_torch(theta0)
    del blob["training"]
    torch.save(blob, theta0)
    meta = json.loads(checksum_path(theta0).read_text())
    meta.update(sha256=hashlib.sha256(theta0.read_bytes()).hexdigest(), bytes=theta0.stat().st_size)
    checksum_path(theta0).write_text(json.dumps(meta))
    again = runner.run_search(_cfg(old), tmp_path / "run", progress=False)
    assert again.timing.pretrain == 0 and again.theta0_training is None  # loaded, not rebuilt
    assert again.test == res.test and again.training == res.training


def _interrupt(target: object, name: str, when: Callable[..., bool]) -> Callable[..., Any]:
    real = getattr(target, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if when(*args, **kwargs):
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    return wrapper


def _cut_search(monkeypatch: pytest.MonkeyPatch, cfg: RunConfig, out: Path, at_t: int) -> None:
    """Run a search interrupted before iteration ``at_t``."""
    with monkeypatch.context() as m:
        m.setattr(Searcher, "probe", _interrupt(Searcher, "probe", lambda s, a, t: t == at_t))
        with pytest.raises(KeyboardInterrupt):
            runner.run_search(cfg, out, progress=False)


def _cut_after_checkpoint(
    monkeypatch: pytest.MonkeyPatch, run: Callable[[], Any], n: int = 1
) -> None:
    """Run ``run``, interrupted right after the ``n``-th training checkpoint is written."""
    real, calls = fit_module.save_torch, [0]

    def save_then_die(path: Any, obj: Any) -> None:
        real(path, obj)
        calls[0] += 1
        if calls[0] == n:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(fit_module, "save_torch", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            run()


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# -- the readers: any damage is a DamagedFileError naming the file ---------------------------


def _write_each(tmp_path: Path) -> dict[str, Path]:
    from safetensors.torch import save_file

    from embudget.io import save_npz, save_torch

    files = {n: tmp_path / n for n in ("a.pt", "a.npz", "a.safetensors", "a.json")}
    save_torch(files["a.pt"], {"x": torch.arange(50), "y": "z"})
    save_npz(files["a.npz"], x=np.arange(50))
    save_file({"x": torch.arange(50)}, str(files["a.safetensors"]))
    files["a.json"].write_text(json.dumps({"x": list(range(50))}))
    return files


_READERS: dict[str, Callable[[Path], Any]] = {
    "a.pt": load_torch,
    "a.npz": load_npz,
    "a.safetensors": load_safetensors,
    "a.json": read_json,
}


@pytest.mark.parametrize("name", list(_READERS))
@pytest.mark.parametrize("keep", [0.0, 0.02, 0.5, 0.97])
def test_readers_refuse_truncated_files(name: str, keep: float, tmp_path: Path) -> None:
    path = _write_each(tmp_path)[name]
    _READERS[name](path)  # whole: reads
    _truncate(path, keep)
    with pytest.raises(DamagedFileError) as e:
        _READERS[name](path)
    assert e.value.path == str(path) and "--overwrite" in str(e.value)


@settings(max_examples=60, deadline=None)
@given(
    lines=st.lists(st.dictionaries(st.text(max_size=3), st.integers()), max_size=5),
    data=st.binary(max_size=200),
)
def test_jsonl_reader_keeps_complete_lines_only(lines: list[dict[str, int]], data: bytes) -> None:
    """Complete lines, then random bytes: the strict reader returns the lines or names the
    file; the tolerant one drops a torn last line and fails only on damage before it."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "log.jsonl"
        path.write_bytes("".join(json.dumps(x) + "\n" for x in lines).encode() + data)
        for torn_tail_ok in (False, True):
            try:
                got = read_jsonl(path, torn_tail_ok=torn_tail_ok)
            except DamagedFileError as e:
                assert e.path == str(path) and data
                assert not torn_tail_ok or b"\n" in data  # a bad line before the last
            else:
                assert got[: len(lines)] == lines
                assert torn_tail_ok or data.endswith(b"\n") or not data
        if b"\n" not in data:
            assert read_jsonl(path, torn_tail_ok=True) == lines


# -- damaged files: a typed error naming the file and the fix -------------------------------


@pytest.mark.parametrize("damage", ["empty", "truncated", "not-a-state"])
def test_damaged_search_state(
    damage: str, tmp_path: Path, ref: tuple[Path, RunResult, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _cfg(ref[2])
    _cut_search(monkeypatch, cfg, tmp_path / "run", at_t=2)
    state = tmp_path / "run" / "search_state.pt"
    if damage == "empty":
        state.write_bytes(b"")
    elif damage == "truncated":
        _truncate(state)
    else:
        torch.save({"t": 2}, state)
    with pytest.raises(DamagedFileError, match="search_state.pt") as e:
        runner.run_search(cfg, tmp_path / "run", resume=True, progress=False)
    assert e.value.path == str(state) and "--overwrite" in str(e.value)
    assert isinstance(e.value, RunDirError)
    state.unlink()  # the advertised fix: the search starts again from iteration 0
    _same_run(tmp_path / "run", runner.run_search(cfg, tmp_path / "run", resume=True), ref)


def test_damaged_retraining_checkpoint(
    tmp_path: Path, ref: tuple[Path, RunResult, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, out = _cfg(ref[2]), tmp_path / "run"  # Θ0 cached: the first checkpoint is a retraining's
    _cut_after_checkpoint(monkeypatch, lambda: runner.run_search(cfg, out, progress=False))
    (ckpt,) = out.glob("*.ckpt.pt")
    _truncate(ckpt)
    with pytest.raises(DamagedFileError, match=r"retrain-t\d\.ckpt\.pt") as e:
        runner.run_search(cfg, out, resume=True, progress=False)
    assert "delete it" in e.value.fix
    ckpt.unlink()
    _same_run(out, runner.run_search(cfg, out, resume=True, progress=False), ref)


def test_damaged_pretraining_checkpoint_names_the_cache_entry(
    tmp_path: Path, ref: tuple[Path, RunResult, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, out = _cfg(tmp_path / "cache"), tmp_path / "run"
    _cut_after_checkpoint(monkeypatch, lambda: runner.run_search(cfg, out, progress=False))
    (ckpt,) = (tmp_path / "cache").glob("*.ckpt.pt")
    ckpt.write_bytes(b"")
    with pytest.raises(DamagedFileError, match="cache entry") as e:
        runner.run_search(cfg, out, resume=True, progress=False)
    assert e.value.path == str(ckpt)
    ckpt.unlink()
    _same_run(out, runner.run_search(cfg, out, resume=True, progress=False), ref)


def test_damaged_training_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, out = _cfg(tmp_path / "cache", "train.max_steps=30"), tmp_path / "train"
    _cut_after_checkpoint(monkeypatch, lambda: runner.run_train(cfg, out, progress=False))
    _truncate(out / "checkpoint.pt", 0.9)
    with pytest.raises(DamagedFileError, match="checkpoint.pt"):
        runner.run_train(cfg, out, resume=True, progress=False)


def _finished_copy(ref: tuple[Path, RunResult, Path], tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(ref[0], out)
    return out


def test_torn_retrain_log(tmp_path: Path, ref: tuple[Path, RunResult, Path]) -> None:
    out = _finished_copy(ref, tmp_path)
    (out / "results.json").unlink()
    log = out / "retrain.jsonl"
    log.write_bytes(log.read_bytes()[:-20])
    with pytest.raises(DamagedFileError, match="retrain.jsonl.*line 2") as e:
        runner.run_search(_cfg(ref[2]), out, resume=True, progress=False)
    assert "retrain every candidate" in e.value.fix
    log.unlink()
    _same_run(out, runner.run_search(_cfg(ref[2]), out, resume=True, progress=False), ref)


def test_damaged_candidate_weights(tmp_path: Path, ref: tuple[Path, RunResult, Path]) -> None:
    out = _finished_copy(ref, tmp_path)
    (out / "results.json").unlink()
    assert ref[1].chosen is not None
    weights = out / f"{ref[1].chosen.name}.safetensors"
    _truncate(weights)
    with pytest.raises(DamagedFileError, match=weights.name) as e:
        runner.run_search(_cfg(ref[2]), out, resume=True, progress=False)
    assert "retrain that candidate" in e.value.fix
    weights.unlink()  # the advertised fix
    _same_run(out, runner.run_search(_cfg(ref[2]), out, resume=True, progress=False), ref)


def test_truncated_results(tmp_path: Path, ref: tuple[Path, RunResult, Path]) -> None:
    out = _finished_copy(ref, tmp_path)
    _truncate(out / "results.json")
    with pytest.raises(ResultError, match="results.json is damaged.*--overwrite"):
        runner.run_search(_cfg(ref[2]), out, resume=True, progress=False)
    (out / "results.json").unlink()  # the advertised fix
    _same_run(out, runner.run_search(_cfg(ref[2]), out, resume=True, progress=False), ref)


@pytest.mark.parametrize("content", [b"\xff\xfe\x00bad", b"model: [unclosed\n", b"- a list\n"])
def test_damaged_config(content: bytes, tmp_path: Path, ref: tuple[Path, RunResult, Path]) -> None:
    out = _finished_copy(ref, tmp_path)
    (out / "config.yaml").write_bytes(content)
    with pytest.raises(DamagedFileError, match="(?s)config.yaml.*--overwrite"):
        runner.run_search(_cfg(ref[2]), out, resume=True, progress=False)


def test_the_command_line_reports_damage_with_exit_code_2(
    tmp_path: Path, ref: tuple[Path, RunResult, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from embudget.cli import main

    out = _finished_copy(ref, tmp_path)
    (out / "config.yaml").write_bytes(b"\xff\xfe")
    argv = ["search", "--out", str(out), "--resume", "--no-progress"]
    argv += [x for o in [*TINY, f"cache_dir={ref[2]}"] for x in ("--set", o)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "config.yaml is damaged" in err and "--overwrite" in err and "Traceback" not in err


def test_truncated_sizes_on_export(tmp_path: Path, ref: tuple[Path, RunResult, Path]) -> None:
    from embudget.deploy.export import export_run

    out = _finished_copy(ref, tmp_path)
    _truncate(out / "sizes.npz")
    with pytest.raises(DamagedFileError, match="sizes.npz"):
        export_run(out, tmp_path / "table.safetensors")


# -- the cached Θ0 ---------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "bit-flip", "no-checksum", "bad-checksum-file"])
def test_damaged_theta0_is_rebuilt(
    damage: str,
    tmp_path: Path,
    ref: tuple[Path, RunResult, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(ref[2], cache)
    (theta0,) = cache.glob("pretrain-*[0-9a-f].pt")
    ref_theta0 = ref[2] / theta0.name
    good = theta0.read_bytes()
    if damage == "truncated":
        _truncate(theta0)
    elif damage == "bit-flip":
        data = bytearray(good)
        data[len(data) // 2] ^= 0x10
        theta0.write_bytes(bytes(data))
    elif damage == "no-checksum":
        checksum_path(theta0).unlink()
    else:
        checksum_path(theta0).write_text('{"sha256": ')
    with caplog.at_level("WARNING", logger="embudget"):
        res = runner.run_search(_cfg(cache), tmp_path / "run", progress=False)
    assert "training it again" in caplog.text
    assert res.timing.pretrain > 0  # rebuilt, not loaded
    _same_run(tmp_path / "run", res, ref)
    rebuilt, original = load_torch(theta0)["model"], load_torch(ref_theta0)["model"]
    assert all(torch.equal(rebuilt[k], original[k]) for k in original)
    assert json.loads(checksum_path(theta0).read_text())["bytes"] == theta0.stat().st_size
    again = runner.run_search(_cfg(cache), tmp_path / "again", progress=False)
    assert again.timing.pretrain == 0  # and trusted again


# -- history.jsonl on resume ------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["torn", "deleted", "missing-lines", "extra-line", "garbage"])
def test_history_repaired_on_resume(
    damage: str, tmp_path: Path, ref: tuple[Path, RunResult, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, out = _cfg(ref[2]), tmp_path / "run"
    _cut_search(monkeypatch, cfg, out, at_t=3)
    hist = out / "history.jsonl"
    lines = hist.read_bytes().splitlines(keepends=True)
    assert len(lines) == 3
    saved = _history(out, timings=True)
    if damage == "torn":
        hist.write_bytes(b"".join(lines)[:-15])
    elif damage == "deleted":
        hist.unlink()
    elif damage == "missing-lines":
        hist.write_bytes(lines[0])
    elif damage == "extra-line":  # killed between the append and the state's save
        hist.write_bytes(b"".join(lines) + lines[-1].replace(b'"t": 2', b'"t": 3'))
    else:
        hist.write_bytes(b"\x00\xff" * 100)
    res = runner.run_search(cfg, out, resume=True, progress=False)
    _same_run(out, res, ref)
    assert _history(out, timings=True)[:3] == saved  # the saved lines, timings included


def test_history_of_a_state_without_its_lines(
    tmp_path: Path, ref: tuple[Path, RunResult, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A state that keeps no copy of the lines (as written before it did): the file's complete
    lines are kept, and too few of them is a typed error."""
    cfg, out = _cfg(ref[2]), tmp_path / "run"
    _cut_search(monkeypatch, cfg, out, at_t=3)
    state = load_torch(out / "search_state.pt")
    del state["history"]
    torch.save(state, out / "search_state.pt")
    hist = out / "history.jsonl"
    whole = hist.read_bytes()
    hist.write_bytes(whole + whole[:30])  # a torn fourth line
    shutil.copytree(out, tmp_path / "short")
    _same_run(out, runner.run_search(cfg, out, resume=True, progress=False), ref)
    (tmp_path / "short" / "history.jsonl").write_bytes(whole.splitlines(keepends=True)[0])
    with pytest.raises(DamagedFileError, match="history.jsonl.*1 complete lines for 3"):
        runner.run_search(cfg, tmp_path / "short", resume=True, progress=False)


# -- failed runs do not block their rerun -----------------------------------------------------


def test_failed_run_is_reused(tmp_path: Path, ref: tuple[Path, RunResult, Path]) -> None:
    out = tmp_path / "run"
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item\n1\n")
    with pytest.raises(DataFormatError):
        runner.run_search(_cfg(ref[2], f"data.name={bad}"), out, progress=False)
    assert {p.name for p in out.iterdir()} == {"run.log"}
    with pytest.raises(Exception, match="(?i)infeasible"):  # d_max 8 at 90% sparsity
        runner.run_search(_cfg(ref[2], "budget.sparsity=0.9"), out, progress=False)
    assert (out / "run.log.failed").is_file() and (out / "config.yaml").is_file()
    # resuming with another config starts afresh too, and keeps both failed logs
    res = runner.run_search(_cfg(ref[2]), out, resume=True, progress=False)
    assert {"run.log.failed", "run.log.failed.1", "config.yaml.failed.1"} <= {
        p.name for p in out.iterdir()
    }
    _same_run(out, res, ref)


def test_failed_training_is_reused(tmp_path: Path, ref: tuple[Path, RunResult, Path]) -> None:
    out = tmp_path / "train"
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"user,item\n\xff\xfe\n")
    with pytest.raises(DataFormatError):
        runner.run_train(_cfg(ref[2], f"data.name={bad}"), out, progress=False)
    res = runner.run_train(_cfg(ref[2]), out, progress=False)
    assert res.kind == "train" and (out / "run.log.failed").is_file()
    assert "run stopped by DataFormatError" in (out / "run.log.failed").read_text()


def test_a_directory_in_use_is_left_alone(
    tmp_path: Path, ref: tuple[Path, RunResult, Path]
) -> None:
    """A run still going (here: its run.log locked, as a running process holds it) looks
    like a failed one from its files, but is neither reused nor overwritten."""
    out = tmp_path / "run"
    with pytest.raises(Exception, match="(?i)infeasible"):
        runner.run_search(_cfg(ref[2], "budget.sparsity=0.9"), out, progress=False)
    before = sorted(p.name for p in out.iterdir())
    with file_lock(out / "run.log"):
        for overwrite in (False, True):
            with pytest.raises(RunDirError, match="in use"):
                runner.run_search(_cfg(ref[2]), out, overwrite=overwrite, progress=False)
    assert sorted(p.name for p in out.iterdir()) == before


def test_a_run_with_progress_keeps_its_protection(
    tmp_path: Path, ref: tuple[Path, RunResult, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, out = _cfg(ref[2]), tmp_path / "run"
    _cut_search(monkeypatch, cfg, out, at_t=1)
    with pytest.raises(RunDirError, match="already holds files"):
        runner.run_search(cfg, out, progress=False)
    with pytest.raises(RunDirError, match="config.yaml differs"):
        runner.run_search(_cfg(ref[2], "seed=3"), out, resume=True, progress=False)
    assert (out / "search_state.pt").is_file() and not list(out.glob("*.failed*"))


# -- fault injection: interrupted at random points, resumed ------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_interrupted_at_random_points_resumes_to_the_same_run(
    seed: int, tmp_path: Path, ref: tuple[Path, RunResult, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupt at a random checkpoint write (pretraining or retraining) and a random
    iteration, several times, then finish."""
    rng = random.Random(seed)
    cfg, out = _cfg(tmp_path / "cache"), tmp_path / "run"
    kills = 0
    for _ in range(3):
        if rng.random() < 0.5:
            at = rng.randrange(4)
            with monkeypatch.context() as m:
                m.setattr(
                    Searcher, "probe", _interrupt(Searcher, "probe", lambda s, a, t, at=at: t == at)
                )
                try:
                    runner.run_search(cfg, out, resume=out.exists(), progress=False)
                except KeyboardInterrupt:
                    kills += 1
        else:
            n = rng.randrange(1, 4)
            try:
                _cut_after_checkpoint(
                    monkeypatch,
                    lambda: runner.run_search(cfg, out, resume=out.exists(), progress=False),
                    n,
                )
                kills += 1
            except pytest.fail.Exception:  # finished before the n-th checkpoint
                pass
    res = runner.run_search(cfg, out, resume=True, progress=False)
    assert kills >= 1
    _same_run(out, res, ref)


#: A search that kills itself with SIGKILL at its K-th atomic rename, just before or just after
#: it (so also between a history line's append and the state's save, or with a temporary file
#: left behind). A full run renames 22 times: config, env, Θ0's checkpoints, Θ0 and its
#: checksum, the history, 4 search states, 2 x (2 checkpoints + weights), 5 final files.
_CHILD = """
import os, signal, sys, torch
from embudget.config import load_config
from embudget.pipeline import run as runner
torch.set_num_threads(1)
k, after, calls, real = int(sys.argv[3]), sys.argv[4] == "after", [0], os.replace
def replace(src, dst):
    calls[0] += 1
    if calls[0] == k and not after:
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)
    if calls[0] == k:
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
cfg = load_config(overrides=sys.argv[5:], fast=False)
runner.run_search(cfg, sys.argv[1], resume=sys.argv[2] == "1")
"""


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_sigkill_at_random_points_resumes_to_the_same_run(
    seed: int, tmp_path: Path, ref: tuple[Path, RunResult, Path]
) -> None:
    """A subprocess search killed with SIGKILL at a random atomic write, its resumption killed
    at another, then resumed to the end."""
    rng = random.Random(100 + seed)
    cache, out = tmp_path / "cache", tmp_path / "run"
    codes = []
    for k in (rng.randint(1, 22), rng.randint(1, 12)):
        resume = "1" if (out / "config.yaml").is_file() else "0"
        where = rng.choice(["before", "after"])
        args = [str(out), resume, str(k), where, *TINY, f"cache_dir={cache}"]
        done = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True)
        assert done.returncode in (0, -signal.SIGKILL), done.stderr.decode()[-2000:]
        codes.append(done.returncode)
    assert codes[0] == -signal.SIGKILL  # the first run was killed (it renames 22 times)
    res = runner.run_search(_cfg(cache), out, resume=(out / "config.yaml").is_file())
    _same_run(out, res, ref)


def test_overwrite_reuses_a_run_that_failed_before_writing_its_config(tmp_path: Path) -> None:
    from embudget.cli import main

    out = tmp_path / "run"
    args = ["train", "--dataset", str(tmp_path / "missing"), "--out", str(out), "--no-progress"]
    assert main(args) == 2  # unknown dataset: fails before config.yaml is written
    assert (out / "run.log").is_file() and not (out / "config.yaml").exists()
    small = [
        "--set",
        "train.max_steps=2",
        "--set",
        "train.eval_every_steps=1",
        "--set",
        "model.d_max=4",
    ]
    args = ["train", "--dataset", "gowalla-mini", "--out", str(out), "--no-progress", "--overwrite"]
    assert main([*args, *small]) == 0
    assert (out / "results.json").is_file() and (out / "run.log.failed").is_file()
