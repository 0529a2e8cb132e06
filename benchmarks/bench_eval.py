"""Full-ranking evaluation cost vs the bare user x item product it contains.

Gowalla, protocol P, random U (29,858 x 128) and V (40,981 x 128). Times the bare product
``U[batch] @ V.T`` over the same user batches that ``evaluate`` uses, then the whole
``evaluate(..., split="test")``; prints both medians and their ratio (target: <= 1.5).

    python benchmarks/bench_eval.py             # 3 repeats, all test users
    python benchmarks/bench_eval.py --quick     # 1 repeat, first 4,000 users
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from embudget.data import Dataset, load_dataset
from embudget.training.evaluate import _batch_size, evaluate


def load_gowalla() -> Dataset:
    return load_dataset("gowalla", protocol="paper", split_seed=42)


def _interleaved(
    fns: dict[str, Callable[[], object]], repeats: int
) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds per function; runs alternate so load drift hits all alike."""
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in fns}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="1 repeat, first 4,000 test users")
    p.add_argument("--batch-users", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--profile", action="store_true", help="cProfile one evaluate() call")
    p.add_argument("--naive", action="store_true", help="also time isnan + plain topk")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else args.repeats

    t0 = time.perf_counter()
    ds = load_gowalla()
    print(f"loaded {ds.name}: {ds.stats()} in {time.perf_counter() - t0:.1f}s")
    dev = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    U = (0.1 * torch.randn(ds.n_users, 128, generator=g)).to(dev)
    V = (0.1 * torch.randn(ds.n_items, 128, generator=g)).to(dev)
    users = np.flatnonzero(np.diff(ds.test.indptr) > 0)
    if args.quick:
        users = users[:4000]
    bs = _batch_size(args.batch_users, 256 * 2**20, ds.n_items)
    users_t = torch.from_numpy(users).to(dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def bare() -> None:
        for b0 in range(0, len(users), bs):
            U[users_t[b0 : b0 + bs]] @ V.T
        sync()

    def full() -> None:
        evaluate(lambda u: U[u] @ V.T, ds, "test", users=users, batch_users=bs, device=dev)
        sync()

    def naive() -> None:
        # what evaluate would cost with a full isnan pass and a plain topk over all items
        for b0 in range(0, len(users), bs):
            s = U[users_t[b0 : b0 + bs]] @ V.T
            bool(torch.isnan(s).any())
            torch.topk(s, 21, dim=1)
        sync()

    fns: dict[str, Callable[[], object]] = {"bare": bare, "evaluate": full}
    if args.naive:
        fns["naive"] = naive
    bare()  # warm-up (allocator, thread pool)
    res = _interleaved(fns, repeats)
    print(
        f"users={len(users)} items={ds.n_items} batch={bs} threads={torch.get_num_threads()} "
        f"device={dev} repeats={repeats}"
    )
    for name, (w, c) in res.items():
        print(f"{name:9s}: wall {w:7.3f} s   cpu {c:7.3f} s")
    (wb, cb), (we, ce) = res["bare"], res["evaluate"]
    print(f"ratio evaluate/bare: wall {we / wb:.3f}  cpu {ce / cb:.3f}  (target <= 1.5)")
    if args.naive:
        wn, cn = res["naive"]
        print(f"ratio naive/bare:    wall {wn / wb:.3f}  cpu {cn / cb:.3f}")
    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(full)
        pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(12)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
