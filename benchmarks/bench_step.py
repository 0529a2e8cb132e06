"""Time one BPR training step of every backbone on Gowalla, protocol P (bet.md §8.1, §10).

A step is forward + backward + Adam step on a 10,000-user batch (distinct uniform users, one
positive, one negative) at d_max = 128; batches are drawn beforehand and timed separately.
The epoch estimate is steps/epoch (52 on Gowalla P) × (median step + median sampling). For
LightGCN it also compares the CSR adjacency with the hand-written backward against plain
autograd through ``torch.sparse.mm`` on a COO adjacency, for the whole step and for the
propagation alone (3 layers forward + backward). Target (bet.md §10, 2 cores): ≈ 0.85 s per
LightGCN step, propagation ≈ 0.64 s, and CSR ≥ 2.5× faster than the COO baseline.

    python benchmarks/bench_step.py              # 7 timed steps per case (plus one warm-up)
    python benchmarks/bench_step.py --quick      # 2 timed steps per case
    python benchmarks/bench_step.py --models lightgcn --threads 2
    python benchmarks/bench_step.py --models lightgcn mf --sizes RUN/sizes.npz   # a table's sizes

With ``--sizes`` (a run's ``sizes.npz``, in dataset order) each model is also timed with those
sizes set, interleaved step by step with the full-size model: propagation and scoring run on
the largest size's columns only (``SizedEmbedding.full(width)``), so this measures what that
narrowing buys for a table the search found.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from embudget.data import BPRSampler, load_dataset
from embudget.models import MODELS, LightGCN, build_model
from embudget.models.graph import Backend

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
PAIR: tuple[Backend, Backend] = ("csr", "coo_autograd")


def _median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _fmt(times: list[float]) -> str:
    return f"{statistics.median(times):.3f} s (min {min(times):.3f}, max {max(times):.3f})"


def _step_fn(model: torch.nn.Module, batches: list[Batch]) -> Callable[[], None]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)  # as embudget.training.fit
    it = iter(range(10**9))

    def step() -> None:
        users, pos, neg = batches[next(it) % len(batches)]
        loss = model.loss(users, pos, neg)  # type: ignore[operator]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    return step


def _prop_fn(model: LightGCN) -> Callable[[], None]:
    ego = model.ego().detach().requires_grad_(True)

    def prop() -> None:
        fu, fi = model.propagate(ego)
        (fu.sum() + fi.sum()).backward()
        ego.grad = None

    return prop


def _interleaved(
    model: LightGCN, make: Callable[[], Callable[[], None]], repeats: int
) -> dict[str, list[float]]:
    """Alternate the two backends step by step so that load changes hit both alike."""
    fns: dict[Backend, Callable[[], None]] = {}
    for backend in PAIR:
        model.graph.backend = backend
        fns[backend] = make()
    out: dict[str, list[float]] = {"csr": [], "coo_autograd": []}
    for backend in PAIR:  # warm-up
        model.graph.backend = backend
        fns[backend]()
    for _ in range(repeats):
        for backend, fn in fns.items():
            model.graph.backend = backend
            t0 = time.perf_counter()
            fn()
            out[backend].append(time.perf_counter() - t0)
    model.graph.backend = "csr"
    return out


def _compare_sizes(
    model: torch.nn.Module, batches: list[Batch], repeats: int, sizes: dict[str, np.ndarray]
) -> None:
    """Full-size vs a budgeted table's step, interleaved so load changes hit both alike."""
    sized = copy.deepcopy(model)
    sized.set_sizes(sizes["user_sizes"], sizes["item_sizes"])  # type: ignore[operator]
    width = max(t.width for t in sized.embedding_tables())  # type: ignore[operator]
    fns = {"full": _step_fn(model, batches), "sized": _step_fn(sized, batches)}
    out: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up
        fn()
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            out[k].append(time.perf_counter() - t0)
    ratio = statistics.median(out["full"]) / statistics.median(out["sized"])
    print(f"  full-size step {_fmt(out['full'])}")
    print(f"  sized step (width {width}) {_fmt(out['sized'])}: speed-up {ratio:.2f}x")


def _compare_backends(
    model: LightGCN, batches: list[Batch], repeats: int, spe: int, sample_s: float
) -> None:
    steps = _interleaved(model, lambda: _step_fn(model, batches), repeats)
    props = _interleaved(model, lambda: _prop_fn(model), repeats)
    med = {k: statistics.median(v) for k, v in steps.items()}
    pmed = {k: statistics.median(v) for k, v in props.items()}
    for k, label in (("csr", "lightgcn (CSR, again)"), ("coo_autograd", "lightgcn (COO autograd)")):
        epoch = spe * (med[k] + sample_s)
        print(f"{label:<24} {_fmt(steps[k]):<34} {epoch:>8.1f} s")
    print()
    print("LightGCN, CSR + hand-written backward vs COO + autograd, interleaved step by step:")
    print(f"  propagation fwd+bwd, CSR: {_fmt(props['csr'])}")
    print(f"  propagation fwd+bwd, COO: {_fmt(props['coo_autograd'])}")
    print(
        f"  speed-up CSR vs COO: step {med['coo_autograd'] / med['csr']:.2f}x, "
        f"propagation {pmed['coo_autograd'] / pmed['csr']:.2f}x"
    )
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 timed steps per case instead of 7")
    ap.add_argument("--dataset", default="gowalla")
    ap.add_argument("--models", nargs="+", default=["mf", "ncf", "ngcf", "lightgcn"])
    ap.add_argument("--batch-users", type=int, default=10_000)
    ap.add_argument("--d-max", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sizes", help="a run's sizes.npz: also time the step with those sizes")
    args = ap.parse_args()
    repeats = 2 if args.quick else 7
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    for name in args.models:
        if name not in MODELS:
            ap.error(f"unknown model {name!r}; choose from {sorted(MODELS)}")

    t0 = time.perf_counter()
    ds = load_dataset(args.dataset, protocol="paper", split_seed=42)
    print(
        f"{ds.name} (protocol P): {ds.n_users:,} users, {ds.n_items:,} items, "
        f"{ds.train.nnz:,} training interactions; loaded in {time.perf_counter() - t0:.1f} s"
    )
    sampler = BPRSampler(ds.train, args.batch_users, rng=np.random.default_rng(args.seed))
    sample_times = _median_time(sampler.sample, repeats + 1, warmup=0)
    batches = [sampler.sample() for _ in range(repeats + 1)]
    spe = sampler.steps_per_epoch
    print(f"sampling one batch: {_fmt(sample_times)}; {spe} steps per epoch")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {repeats} timed steps")
    print()
    print(f"{'backbone':<24} {'step (median)':<34} {'est. epoch':>10}")

    gen = torch.Generator().manual_seed(args.seed)
    for name in args.models:
        t0 = time.perf_counter()
        model = build_model(name, ds.n_users, ds.n_items, ds.train, args.d_max, generator=gen)
        build_s = time.perf_counter() - t0
        times = _median_time(_step_fn(model, batches), repeats)
        med = statistics.median(times)
        epoch = spe * (med + statistics.median(sample_times))
        print(f"{name:<24} {_fmt(times):<34} {epoch:>8.1f} s   (build {build_s:.1f} s)")
        if args.sizes:
            with np.load(args.sizes, allow_pickle=False) as z:
                _compare_sizes(model, batches, repeats, {k: z[k] for k in z.files})
        if name == "lightgcn" and not args.sizes:
            assert isinstance(model, LightGCN)
            _compare_backends(model, batches, repeats, spe, statistics.median(sample_times))
        del model


if __name__ == "__main__":
    main()
