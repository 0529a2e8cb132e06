import json
from pathlib import Path

import numpy as np
import pytest
import torch

from embudget.errors import RunDirError
from embudget.io import (
    RunDir,
    atomic_path,
    file_lock,
    load_npz,
    load_torch,
    save_npz,
    save_torch,
    write_json,
)
from embudget.seeds import int_seed, np_rng
from embudget.training.fit import Schedule


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("crash")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_npz_and_torch_roundtrip_without_pickle(tmp_path: Path) -> None:
    save_npz(tmp_path / "a.npz", x=np.arange(5), y=np.array(["u1", "u2"]))
    d = load_npz(tmp_path / "a.npz")
    assert d["x"].tolist() == [0, 1, 2, 3, 4] and d["y"].tolist() == ["u1", "u2"]
    save_torch(tmp_path / "s.pt", {"w": torch.ones(2), "step": 3, "state": {"k": [1, 2]}})
    s = load_torch(tmp_path / "s.pt")
    assert s["step"] == 3 and torch.equal(s["w"], torch.ones(2))


def test_file_lock_excludes_a_second_holder_until_released(tmp_path: Path) -> None:
    path = tmp_path / "cell.lock"
    with file_lock(path, wait=False) as first:
        assert first
        with file_lock(path, wait=False) as second:  # another open of the file: refused
            assert not second
    with file_lock(path, wait=False) as again:  # released on exit
        assert again
    with pytest.raises(RuntimeError), file_lock(path):
        raise RuntimeError("the block fails")
    with file_lock(path, wait=False) as after_error:  # released when the block raises
        assert after_error


def test_rundir_refuses_to_overwrite(tmp_path: Path) -> None:
    run = tmp_path / "run"
    RunDir.create(run)
    (run / "results.json").write_text("{}")
    with pytest.raises(RunDirError):
        RunDir.create(run)
    assert (run / "results.json").read_text() == "{}"
    with pytest.raises(RunDirError):
        RunDir.create(run, resume=True)  # no config.yaml: not a run
    (run / "config.yaml").write_text("x: 1\n")
    (run / "checkpoint.pt").write_text("stale")
    RunDir.create(run, overwrite=True)  # a run directory is cleared, nothing stale survives
    assert list(run.iterdir()) == []
    other = tmp_path / "not-a-run"
    other.mkdir()
    (other / "precious.txt").write_text("keep")
    with pytest.raises(RunDirError):
        RunDir.create(other, overwrite=True)
    assert (other / "precious.txt").read_text() == "keep"


def test_named_streams_are_independent_and_stable() -> None:
    a = np_rng(0, "sampler").random(3)
    assert np.array_equal(a, np_rng(0, "sampler").random(3))
    assert not np.array_equal(a, np_rng(0, "probe", 1).random(3))
    assert not np.array_equal(a, np_rng(1, "sampler").random(3))
    assert int_seed(0, "x") == int_seed(0, "x") != int_seed(0, "y")
    assert 0 <= int_seed(5, "z") < 2**63


def test_schedule_matches_iterative_decay() -> None:
    s = Schedule(lr=0.03, decay=0.95, every=200, lr_min=0.001)
    lr = 0.03
    for step in range(0, 20000):
        if step > 0 and step % 200 == 0:
            lr = max(0.001, lr * 0.95)
        assert s.lr_at(step) == pytest.approx(lr, rel=1e-12)
    assert s.lr_at(10**6) == 0.001


def test_resume_accepts_another_device_but_not_another_procedure(tmp_path: Path) -> None:
    from embudget.budget.usage import Usage
    from embudget.config import load_config
    from embudget.pipeline.rundir import open_run
    from embudget.result import Metrics, RunResult, Timing

    cfg = load_config(overrides=["model.name=mf"], fast=False)
    run, _ = open_run(cfg, tmp_path / "r", overwrite=False, resume=False)
    (run.path / "config.yaml").write_text(cfg.to_yaml())
    done = RunResult(
        kind="train",
        method=None,
        dataset="toy",
        protocol="paper",
        split_fingerprint="f",
        backbone="mf",
        seed=0,
        config_hash=cfg.hash(),
        embudget_version="0",
        torch_version="0",
        device="cpu",
        sparsity=None,
        kept_fraction=None,
        budgeted=False,
        usage=Usage.of_sizes(np.array([4]), np.array([4]), d_max=4),
        storage="masked",
        valid=Metrics({"recall@20": 0.5}, 1),
        test=Metrics({"recall@20": 0.25}, 1),
        timing=Timing(),
    )
    done.write(run.path / "results.json")
    moved = load_config(overrides=["model.name=mf", "threads=2", "device=auto"], fast=False)
    assert open_run(moved, run.path, overwrite=False, resume=True)[1] == done
    with pytest.raises(RunDirError, match="finished train run"):
        open_run(moved, run.path, overwrite=False, resume=True, kind="search")
    with pytest.raises(RunDirError):
        open_run(
            load_config(overrides=["model.name=mf", "seed=1"], fast=False), run.path, False, True
        )
