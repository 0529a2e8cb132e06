"""Data-parallel training (training.distributed) with 2 gloo processes on gowalla-mini MF.

The two ranks are this file run as a script (``python tests/test_ddp.py RANK PORT DIR``) with
torchrun's variables set; the test process runs the one-process references. Checked:

- 40 steps at P=2 end where 40 steps at P=1 on the same global batches end (float tolerance:
  only the order of the gradient sums differs), and the two ranks hold identical parameters;
- a checkpoint written at P=1 resumes at P=2, and one written at P=2 resumes at P=1, to the
  same parameters;
- rank 1 writes, renames and deletes nothing in the run directory, the checkpoints or the
  cache (an audit hook records every such call), for ``train`` and a small ``search``, and
  returns the result rank 0 wrote;
- ``embudget train`` at P=2 trains the same model and leaves the process group at its end;
- a rank that failed leaves at once, and a rank that succeeded does not hang or fail waiting
  for it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from embudget.config import RunConfig, load_config
from embudget.data.dataset import Dataset
from embudget.data.sampling import BPRSampler
from embudget.pipeline.build import PRETRAIN_STREAM, fit_model, load_data, make_model
from embudget.training.distributed import current
from embudget.training.fit import Schedule, _Stepper

pytestmark = pytest.mark.distributed

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
OVERRIDES = [
    "data.name=gowalla-mini",
    "model.name=mf",
    "model.d_max=16",
    "threads=1",
    "train.batch_users=256",
    "train.eval_every_steps=20",
    "train.patience=5",
    "train.max_steps=40",
]
#: the small search: Θ0 (nested), the probes on rank 0, retraining of 2 candidates from Θ0
SEARCH = [
    "search.method=bet",
    "search.iterations=2",
    "search.sampler.candidates=4",
    "search.retrain.top=2",
    "search.retrain.max_steps=20",
    "budget.sparsity=0.8",
]
#: the same training through the command line (``embudget train``)
CLI = [x for o in OVERRIDES for x in ("--set", o)]
#: what a rank prints after writing its results, before the interpreter exits
DONE = "rank finished"


def _cfg(base: Path, *extra: str) -> RunConfig:
    return load_config(overrides=[*OVERRIDES, f"cache_dir={base / 'cache'}", *extra])


def _fit(
    cfg: RunConfig, ds: Dataset, steps: int, ckpt: Path
) -> tuple[dict[str, torch.Tensor], int]:
    """MF trained (or resumed from ``ckpt``) up to ``steps`` steps: its parameters and the
    batches drawn by this call (a resumed fit draws only the steps after the checkpoint)."""
    model = make_model(cfg, ds, torch.device("cpu"), PRETRAIN_STREAM)
    train = dataclasses.replace(cfg.train, max_steps=steps)
    draws, sample = [0], BPRSampler.sample

    def counted(self: BPRSampler) -> Any:
        draws[0] += 1
        return sample(self)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(BPRSampler, "sample", counted)
        fit_model(
            cfg, model, ds, PRETRAIN_STREAM, train=train, checkpoint=ckpt, progress=False, desc="t"
        )
    return {k: v.detach().clone() for k, v in model.named_parameters()}, draws[0]


def _gradient(cfg: RunConfig, ds: Dataset) -> dict[str, torch.Tensor]:
    """The gradient and loss of the first global batch of 255 triples (odd: unequal slices),
    summed over the ranks when there are several."""
    model = make_model(cfg, ds, torch.device("cpu"), PRETRAIN_STREAM)
    st = _Stepper(model, ds, Schedule(), 255, 0, torch.device("cpu"), group=current(CPU))
    if st.group is not None:
        loss = st._slice_backward(st.group)
    else:
        loss = model.loss(*st.sampler.sample())
        loss.backward()
    grads = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    return {"loss": loss.detach().reshape(1), **grads}


# -- the ranks ---------------------------------------------------------------------------


def _watch(root: Path, seen: list[str]) -> None:
    """Record every write, rename, removal or creation under ``root`` (an audit hook)."""
    prefix = os.path.join(os.path.abspath(root), "")
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            path, mode, flags = args
            if isinstance(mode, str):
                written = any(c in mode for c in "wax+")
            else:
                written = isinstance(flags, int) and bool(flags & writes)
            paths = [path] if written else []
        elif event in ("os.rename", "os.remove", "os.mkdir", "os.rmdir", "os.truncate"):
            paths = [args[0]] + ([args[1]] if event == "os.rename" else [])
        elif event in ("shutil.rmtree", "tempfile.mkstemp"):
            paths = [args[0]]
        else:
            return
        for p in paths:
            if isinstance(p, str | bytes | os.PathLike):
                p = os.fsdecode(p)
                if os.path.join(os.path.abspath(p), "").startswith(prefix):
                    seen.append(p)

    sys.addaudithook(hook)


def _as_rank(rank: int, port: int) -> None:
    """Set the variables torchrun gives rank ``rank`` of 2 on this machine."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )


def _rank_main(rank: int, port: int, base: Path) -> None:
    """One rank: the P=2 fits and runs, each rank's parameters and results into ``base/out``."""
    _as_rank(rank, port)
    torch.set_num_threads(1)
    import torch.distributed as dist
    from safetensors.torch import save_file

    from embudget.cli import main as cli_main
    from embudget.pipeline.run import run_search, run_train

    work, out = base / "work", base / "out"
    seen: list[str] = []
    _watch(work, seen)
    cfg = _cfg(work)
    ds = load_data(cfg)
    grad = _gradient(cfg, ds)
    a, draws_a = _fit(cfg, ds, 40, work / "c1.pt")  # resumed from P=1's step 20
    _fit(cfg, ds, 20, work / "c2.pt")
    if rank == 0:
        shutil.copy(work / "c2.pt", out / "c2.pt")  # for the P=1 resume
    b, draws_b = _fit(cfg, ds, 40, work / "c2.pt")
    params = {f"a.{k}": v for k, v in a.items()} | {f"b.{k}": v for k, v in b.items()}
    params |= {f"g.{k}": v for k, v in grad.items()}
    train = run_train(cfg, work / "train", progress=False)
    search = run_search(_cfg(work, *SEARCH), work / "search", progress=False)
    # the command line, last: it leaves the process group when the command ends
    cli = ["train", "--out", str(work / "cli"), "--no-progress", "--set", f"cache_dir={work}"]
    code = cli_main([*cli, *CLI])
    save_file(params, str(out / f"rank{rank}.safetensors"))
    results = {
        "train": train.to_dict(),
        "search": search.to_dict(),
        "cli": [code, dist.is_initialized()],
        "writes": seen,
        "draws": [draws_a, draws_b],
    }
    (out / f"rank{rank}.json").write_text(json.dumps(results))
    print(DONE, flush=True)


def _run_ranks(
    args: Callable[[int, int], list[str]], *, timeout: float
) -> tuple[list[int], list[str]]:
    """Run this file as ranks 0 and 1 (``args(rank, port)`` after the script): their exit
    codes and their output."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, *args(r, port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in (0, 1)
    ]
    try:
        logs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    return [p.returncode for p in procs], logs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-5, msg=f"{what}: {k}")


def test_two_ranks_train_like_one(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    cfg = _cfg(work)
    ds = load_data(cfg)
    one = tmp_path / "one.pt"
    _fit(cfg, ds, 20, one)
    shutil.copy(one, work / "c1.pt")  # a P=1 checkpoint at step 20, for P=2 to resume
    ref, _ = _fit(cfg, ds, 40, one)  # P=1, 40 steps (resumed at 20)

    codes, logs = _run_ranks(lambda r, port: [str(r), str(port), str(tmp_path)], timeout=240)
    for code, log in zip(codes, logs, strict=True):
        # Tolerated: SIGABRT after the rank wrote everything and printed DONE, i.e. while the
        # interpreter finalises (gloo's "terminate called without an active exception", seen
        # twice in CI under load; not reproduced here in 79 runs, three at once beside three
        # training processes).
        # Any other failure, or an abort before DONE, fails.
        finalising = code == -signal.SIGABRT and DONE in log
        assert code == 0 or finalising, "\n".join(logs)

    ranks = [load_file(str(out / f"rank{r}.safetensors")) for r in (0, 1)]
    for k in ranks[0]:  # the same reduced gradients and the same Adam step on every rank
        assert torch.equal(ranks[0][k], ranks[1][k]), k
    split = [{k[2:]: v for k, v in ranks[0].items() if k.startswith(f"{s}.")} for s in "abg"]
    grad = _gradient(cfg, ds)  # one process, the whole batch
    assert split[2].keys() == grad.keys()
    for k in grad:
        torch.testing.assert_close(split[2][k], grad[k], rtol=1e-5, atol=1e-9, msg=k)
    _close(split[0], ref, "P=1 checkpoint resumed at P=2")
    _close(split[1], ref, "P=2 from step 0 (checkpoint at 20)")
    resumed, draws = _fit(cfg, ds, 40, out / "c2.pt")
    assert draws == 20
    _close(resumed, ref, "P=2 checkpoint resumed at P=1")
    model = load_file(str(work / "train" / "model.safetensors"))  # `train`: the same 40 steps
    _close({k: model[k] for k in ref}, ref, "run_train at P=2")

    res = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert res[0]["draws"] == res[1]["draws"] == [20, 20]  # both resumed at step 20
    assert res[1]["writes"] == [], "rank 1 wrote files"
    assert any(p.endswith("results.json") for p in res[0]["writes"])  # the hook does see writes
    for kind in ("train", "search"):
        assert res[0][kind] == res[1][kind]
    assert res[0]["cli"] == res[1]["cli"] == [0, False]  # `embudget train` left the group
    cli = load_file(str(work / "cli" / "model.safetensors"))
    _close({k: cli[k] for k in ref}, ref, "embudget train at P=2")
    assert res[0]["train"]["training"]["steps"] == 40
    assert (work / "search" / "model.safetensors").is_file()


def _rank_leaves_early(rank: int, port: int) -> None:
    """Rank 1 fails: it leaves the group without waiting; rank 0, whose command succeeded,
    waits for it at the end and must not hang or fail."""
    import logging
    import time

    from embudget.training import distributed

    logging.basicConfig(level=logging.WARNING)
    _as_rank(rank, port)
    group = current(CPU)
    assert group is not None
    group.barrier()
    if rank == 0:
        time.sleep(1)  # rank 1 is gone by now
    distributed.shutdown(wait=rank == 0)
    print(DONE, flush=True)


def test_a_rank_that_failed_does_not_hang_the_others() -> None:
    codes, logs = _run_ranks(lambda r, port: ["early", str(r), str(port)], timeout=120)
    assert codes == [0, 0], "\n".join(logs)
    assert all(DONE in log for log in logs)
    assert "another rank left the process group early" in logs[0]


if __name__ == "__main__":
    if sys.argv[1] == "early":
        _rank_leaves_early(int(sys.argv[2]), int(sys.argv[3]))
    else:
        _rank_main(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
