"""Per-step cost of embudget's training loop against a bare PyTorch loop, the thread
crossover, and start-up (import) times.

Step (default): one BPR training step on MF and LightGCN (10,000-triple batches, d_max = 128,
BET's settings) on ``gowalla-mini`` (800 users, 993 items) and on Last.fm (1,880 users,
4,489 items; the real one when ``lastfm`` is found by name, e.g. in ``../shared/data``, else a
synthetic matrix of its size), timed three ways (four for MF), interleaved block by block in
one process:

- ``embudget``: ``training.fit``'s stepper (BPR sampler with negative rejection, lr schedule,
  the model's fused loss, ``FusedAdam``, loss bookkeeping);
- ``unfused``: the same stepper with the model's plain-autograd ``loss_reference``;
- ``floor`` (MF only): the step with the fewest tensor passes: gradients derived by hand, no
  autograd, no sampler, ``index_add_`` into one zeroed gradient, the fused Adam kernel;
- ``bare``: what one would write by hand: uniform ``torch.randint`` indices (no positive
  lookup, no rejection), ``table[idx]`` gathers, ``softplus`` BPR + L2 through autograd,
  ``torch.optim.Adam(fused=True)``; LightGCN propagates with ``torch.sparse.mm`` on the
  same CSR adjacency (autograd backward).

Threads (``--threads-sweep``): the embudget step at 1 and at 2 intra-op threads, alternating
step by step, for work sizes from the golden runs' (256-triple batches, d = 32) to Gowalla's.

Imports (``--imports``): wall time of ``embudget --help``, of importing the training path,
and of a 5-step ``fit`` in a fresh interpreter, and whether the compiler stack
(``torch._dynamo``) got imported.

    python benchmarks/bench_overhead.py                     # step table, 1 thread
    python benchmarks/bench_overhead.py --repeats 7 --steps 20
    python benchmarks/bench_overhead.py --threads-sweep
    python benchmarks/bench_overhead.py --imports

The machine is usually shared: each table prints the load average before and after, and
medians with min/max. Ratios from the same run are the reliable numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from embudget.data import load_dataset
from embudget.data.dataset import Dataset
from embudget.errors import EmbudgetError
from embudget.models import build_model
from embudget.models.graph import sym_norm_adjacency
from embudget.training.adam import FusedAdam
from embudget.training.fit import Schedule, _Stepper

LASTFM_SHAPE = (1880, 4489, 26344)  # users, items, training interactions (protocol P)


def lastfm_or_synthetic() -> tuple[str, Any]:
    try:
        return "lastfm", load_dataset("lastfm")
    except EmbudgetError:
        n_users, n_items, nnz = LASTFM_SHAPE
        rng = np.random.default_rng(0)
        rows = rng.integers(0, n_users, nnz * 2)
        cols = np.minimum(rng.zipf(1.3, nnz * 2) - 1, n_items - 1)
        m = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), (n_users, n_items))
        m.sum_duplicates()
        m.data[:] = 1.0
        return "lastfm-synthetic", SimpleNamespace(train=m, n_users=n_users, n_items=n_items)


def data(name: str) -> tuple[str, Any]:
    return lastfm_or_synthetic() if name == "lastfm" else (name, load_dataset(name))


# --- the step variants -------------------------------------------------------------
def embudget_step(ds: Any, model_name: str, batch: int, d: int, fused: bool) -> Callable[[], None]:
    model = build_model(model_name, ds.n_users, ds.n_items, ds.train, d)
    if not fused:
        model.loss = model.loss_reference  # type: ignore[method-assign,assignment]
    lr = 0.005 if model_name == "mf" else 0.03
    st = _Stepper(model, cast(Dataset, ds), Schedule(lr), batch, 0, torch.device("cpu"))
    return lambda: st.run(1)


def bare_step(ds: Any, model_name: str, batch: int, d: int) -> Callable[[], None]:
    nu, ni, reg, layers = ds.n_users, ds.n_items, 1e-4, 3
    users_w = torch.nn.Parameter(torch.randn(nu, d) * 0.01)
    items_w = torch.nn.Parameter(torch.randn(ni, d) * 0.01)
    opt = torch.optim.Adam([users_w, items_w], lr=0.005, fused=True)
    adj = None
    if model_name == "lightgcn":
        a = sym_norm_adjacency(ds.train)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            adj = torch.sparse_csr_tensor(
                torch.from_numpy(a.indptr.astype(np.int64)),
                torch.from_numpy(a.indices.astype(np.int64)),
                torch.from_numpy(a.data),
                a.shape,
                check_invariants=False,
            )

    def step() -> None:
        u = torch.randint(0, nu, (batch,))
        p, n = torch.randint(0, ni, (batch,)), torch.randint(0, ni, (batch,))
        if adj is None:
            eu, ep, en = users_w[u], items_w[p], items_w[n]
            ru, rp, rn = eu, ep, en
        else:
            ego = torch.cat([users_w, items_w])
            e, acc = ego, ego
            for _ in range(layers):
                e = torch.sparse.mm(adj, e)
                acc = acc + e
            out = acc / (layers + 1)
            eu, ep, en = out[u], out[nu + p], out[nu + n]
            ru, rp, rn = users_w[u], items_w[p], items_w[n]
        bpr = F.softplus((eu * en).sum(-1) - (eu * ep).sum(-1)).mean()
        loss = bpr + reg * (ru.square().sum() + rp.square().sum() + rn.square().sum()) / batch
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _floor_grad(
    w: torch.Tensor, g: torch.Tensor, idx: tuple[torch.Tensor, ...], reg: float
) -> None:
    """MF's BPR + L2 gradient, derived by hand, written into the zeroed ``g``."""
    u, p, n = idx
    batch = u.numel()
    eu, ep, en = w.index_select(0, u), w.index_select(0, p), w.index_select(0, n)
    diff = en - ep
    s = torch.sigmoid(torch.linalg.vecdot(eu, diff)).div_(batch).unsqueeze(1)
    es = eu * s  # d loss / d en; its negation is d loss / d ep (BPR part)
    c = 2 * reg / batch  # d (reg * |e|^2 / batch) / d e = c * e
    g.zero_()
    g.index_add_(0, u, diff.mul_(s).add_(eu, alpha=c))
    g.index_add_(0, p, ep.mul_(c).sub_(es))
    g.index_add_(0, n, en.mul_(c).add_(es))


def floor_step(ds: Any, batch: int, d: int) -> Callable[[], None]:
    """MF's step with the fewest tensor passes torch allows: gradients derived by hand (no
    autograd), one vector dot per triple, ``index_add_`` into one zeroed gradient, the fused Adam
    kernel; no sampler (indices drawn once). What an exact step cannot go below with torch ops.
    The hand gradient is checked against autograd's on the first batch."""
    nu, ni, reg = ds.n_users, ds.n_items, 1e-4
    w = torch.randn(nu + ni, d) * 0.01
    w.grad = g = torch.zeros_like(w)  # written in place by every step
    opt = FusedAdam([w], lr=0.005)  # the optimiser embudget trains with
    u = torch.randint(0, nu, (batch,))
    idx = (u, torch.randint(nu, nu + ni, (batch,)), torch.randint(nu, nu + ni, (batch,)))

    wa = w.clone().requires_grad_()
    eu, ep, en = (wa[i] for i in idx)
    bpr = F.softplus((eu * en).sum(-1) - (eu * ep).sum(-1)).mean()
    (bpr + reg * (eu.square().sum() + ep.square().sum() + en.square().sum()) / batch).backward()
    _floor_grad(w, g, idx, reg)
    assert wa.grad is not None and torch.allclose(g, wa.grad, rtol=1e-4, atol=1e-7)

    def step() -> None:
        _floor_grad(w, g, idx, reg)
        opt.step()

    return step


def _block(fn: Callable[[], None], steps: int) -> tuple[float, float]:
    """Mean (wall, CPU) seconds per step over ``steps`` steps."""
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - w0) / steps, (time.process_time() - c0) / steps


def _ms(xs: list[float]) -> str:
    return f"{1e3 * statistics.median(xs):7.1f} ({1e3 * min(xs):.1f}-{1e3 * max(xs):.1f})"


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def run_steps(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    print(
        f"# step time, ms: median (min-max) of {args.repeats} blocks of {args.steps} steps; "
        f"{args.threads} thread(s); batch {args.batch}, d_max {args.d}; {_load()}"
    )
    print(f"{'data':18} {'model':9} {'variant':9} {'wall ms':>22} {'CPU ms':>22} {'ratio':>6}")
    for name in args.datasets:
        label, ds = data(name)
        for model_name in args.models:
            fns = {
                "embudget": embudget_step(ds, model_name, args.batch, args.d, fused=True),
                "unfused": embudget_step(ds, model_name, args.batch, args.d, fused=False),
                "bare": bare_step(ds, model_name, args.batch, args.d),
            }
            if model_name == "mf":
                fns["floor"] = floor_step(ds, args.batch, args.d)
            for fn in fns.values():
                _block(fn, 3)  # warm-up
            wall: dict[str, list[float]] = {k: [] for k in fns}
            cpu: dict[str, list[float]] = {k: [] for k in fns}
            keys = list(fns)
            for r in range(args.repeats):  # rotate the order every repeat
                for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
                    w, c = _block(fns[k], args.steps)
                    wall[k].append(w)
                    cpu[k].append(c)
            for k in keys:
                ratio = [a / b for a, b in zip(cpu[k], cpu["bare"], strict=True)]
                print(
                    f"{label:18} {model_name:9} {k:9} {_ms(wall[k]):>22} {_ms(cpu[k]):>22} "
                    f"{statistics.median(ratio):6.2f}"
                )
    print(f"# ratio: CPU time / bare loop's, median over blocks; {_load()}")


def run_threads(args: argparse.Namespace) -> None:
    cases = [
        ("gowalla-mini", "mf", 256, 32),
        ("gowalla-mini", "lightgcn", 256, 32),
        ("gowalla-mini", "mf", 10000, 128),
        ("gowalla-mini", "lightgcn", 10000, 128),
        ("lastfm", "mf", 10000, 128),
        ("lastfm", "lightgcn", 10000, 128),
        ("gowalla", "mf", 10000, 128),
        ("gowalla", "lightgcn", 10000, 128),
    ]
    from embudget.training.threads import step_work

    print(
        f"# step wall ms at 1 and 2 threads, alternating step by step, median of "
        f"{args.steps} pairs; {_load()}"
    )
    print(
        f"{'data':18} {'model':9} {'batch':>6} {'d':>4} {'work':>10} {'1 thr':>8} "
        f"{'2 thr':>8} {'2/1':>5}"
    )
    loaded: dict[str, tuple[str, Any]] = {}
    for name, model_name, batch, d in cases:
        if name not in args.datasets and not (name == "gowalla" and args.gowalla):
            continue
        label, ds = loaded.setdefault(name, data(name))
        fn = embudget_step(ds, model_name, batch, d, fused=True)
        times: dict[int, list[float]] = {1: [], 2: []}
        for i in range(args.steps + 2):
            for k in (1, 2):
                torch.set_num_threads(k)
                w, _ = _block(fn, 1)
                if i >= 2:
                    times[k].append(w)
        work = step_work(model_name, ds.n_users, ds.n_items, ds.train.nnz, batch, d)
        t1, t2 = statistics.median(times[1]), statistics.median(times[2])
        print(
            f"{label:18} {model_name:9} {batch:6} {d:4} {work:10.3g} {1e3 * t1:8.1f} "
            f"{1e3 * t2:8.1f} {t2 / t1:5.2f}"
        )
    print(f"# {_load()}")


def _timed(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return time.perf_counter() - t0, out.strip().splitlines()[-1] if out.strip() else ""


FIT_SNIPPET = """
import sys, time
t0 = time.perf_counter()
from embudget.config import TrainConfig
from embudget.data import load_dataset
from embudget.models import build_model
from embudget.training.fit import fit
t1 = time.perf_counter()
ds = load_dataset("gowalla-mini")
m = build_model("mf", ds.n_users, ds.n_items, ds.train, 32)
fit(m, ds, TrainConfig(batch_users=256, eval_every_steps=5, patience=1, max_steps=5), seed=0)
print(f"imports {t1 - t0:.2f} s, fit {time.perf_counter() - t1:.2f} s, "
      f"torch._dynamo imported: {'torch._dynamo' in sys.modules}")
"""


ADAM_SNIPPET = """
import sys, time
import torch
t0 = time.perf_counter()
torch.optim.Adam([torch.nn.Parameter(torch.zeros(3))], fused=True)
print(f"constructor {time.perf_counter() - t0:.2f} s, "
      f"torch._dynamo imported: {'torch._dynamo' in sys.modules}")
"""


def run_imports(args: argparse.Namespace) -> None:
    exe = sys.executable
    cli = [exe, "-m", "embudget.cli"]
    print(f"# wall seconds in a fresh interpreter, median of {args.repeats}; {_load()}")
    for label, cmd in [
        ("python -c pass", [exe, "-c", "pass"]),
        ("embudget --help", [*cli, "--help"]),
        ("import torch", [exe, "-c", "import torch"]),
        ("import embudget.pipeline.run", [exe, "-c", "import embudget.pipeline.run"]),
        ("import embudget.bench.report", [exe, "-c", "import embudget.bench.report"]),
        ("5-step fit (gowalla-mini)", [exe, "-c", FIT_SNIPPET]),
        ("torch.optim.Adam(fused=True)", [exe, "-c", ADAM_SNIPPET]),
    ]:
        _timed(cmd)  # warm the file cache
        runs = [_timed(cmd) for _ in range(args.repeats)]
        secs = [t for t, _ in runs]
        print(
            f"{label:32} {statistics.median(secs):6.2f} s ({min(secs):.2f}-{max(secs):.2f}) "
            f"{runs[-1][1] if 'dynamo' in runs[-1][1] else ''}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["gowalla-mini", "lastfm"])
    p.add_argument("--models", nargs="+", default=["mf", "lightgcn"])
    p.add_argument("--batch", type=int, default=10000)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=15, help="steps per timed block")
    p.add_argument("--threads-sweep", action="store_true")
    p.add_argument("--gowalla", action="store_true", help="include Gowalla in the sweep")
    p.add_argument("--imports", action="store_true")
    args = p.parse_args()
    if args.threads_sweep:
        run_threads(args)
    elif args.imports:
        run_imports(args)
    else:
        run_steps(args)


if __name__ == "__main__":
    main()
