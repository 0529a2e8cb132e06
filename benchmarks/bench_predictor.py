"""Time the DeepSets fitness predictor on Gowalla-sized candidates (bet.md §4.5).

|U| = 29,858, |V| = 40,981, d_max = 128, features from the Gowalla training frequencies in
``../shared/data/gowalla/train.txt`` (falls back to Poisson stand-ins if the file is missing).
Scores m = 100 random actions (mean size about 20 % of d_max) and prints the median wall time
of ``embed`` and ``forward`` under ``torch.no_grad()``, of ``greedy`` and ``nearest``, and of
one online update (one action, forward + backward + Adam). Target: scoring 100 candidates well
under 0.5 s on CPU.

    python benchmarks/bench_predictor.py            # 11 repeats (plus one warm-up)
    python benchmarks/bench_predictor.py --quick    # 3 repeats
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from embudget.search.predictor import (
    DeepSetsPredictor,
    PredictorTrainer,
    SimplePredictor,
    greedy,
    nearest,
)

N_USERS, N_ITEMS, D_MAX = 29_858, 40_981, 128
GOWALLA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gowalla" / "train.txt"


def gowalla_freqs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
    """Training frequencies per user and item from the LightGCN-format train file."""
    if not GOWALLA.exists():
        return rng.poisson(27, N_USERS), rng.poisson(20, N_ITEMS), "poisson stand-in"
    users, items = [], []
    for line in GOWALLA.read_text().splitlines():
        tok = line.split()
        if tok:
            users.append(len(tok) - 1)
            items.extend(tok[1:])
    item_freq = np.bincount(np.asarray(items, dtype=np.int64), minlength=N_ITEMS)
    return np.asarray(users, dtype=np.int64), item_freq, str(GOWALLA)


def random_hists(
    rng: np.random.Generator, m: int, n: int, mean_size: float
) -> np.ndarray:  # (m, D_MAX)
    """Log-normal sizes with a random spread per action, scaled to about ``mean_size``."""
    sigma = rng.uniform(0.2, 1.5, size=(m, 1))
    z = rng.standard_normal((m, n))
    raw = np.exp(sigma * z)
    sizes = np.clip(np.floor(raw / raw.mean(axis=1, keepdims=True) * mean_size), 1, D_MAX)
    flat = (np.arange(m)[:, None] * D_MAX + sizes.astype(np.int64) - 1).ravel()
    return np.bincount(flat, minlength=m * D_MAX).reshape(m, D_MAX)


def timeit(fn: Callable[[], object], repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 repeats instead of 11")
    ap.add_argument("--m", type=int, default=100, help="candidates per repeat")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    repeats = 3 if args.quick else 11
    if args.threads:
        torch.set_num_threads(args.threads)

    rng = np.random.default_rng(args.seed)
    user_freq, item_freq, source = gowalla_freqs(rng)
    pred = DeepSetsPredictor.from_freqs(
        user_freq, item_freq, d_max=D_MAX, generator=torch.Generator().manual_seed(args.seed)
    )
    simple = SimplePredictor(N_USERS, N_ITEMS, d_max=D_MAX)
    hu = random_hists(rng, args.m, N_USERS, 0.2 * D_MAX)
    hv = random_hists(rng, args.m, N_ITEMS, 0.2 * D_MAX)
    hu_t, hv_t = torch.from_numpy(hu), torch.from_numpy(hv)
    used = float(((hu + hv) * np.arange(1, D_MAX + 1)).sum(axis=1).mean())

    def no_grad(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return fn()

        return run

    trainer = PredictorTrainer(pred)
    trainer.add((hu[0], hv[0]), 0.9)
    upd_rng = np.random.default_rng(1)
    rows = {
        f"embed {args.m}": timeit(no_grad(lambda: pred.embed(hu_t, hv_t)), repeats),
        f"forward {args.m}": timeit(no_grad(lambda: pred(hu_t, hv_t)), repeats),
        f"greedy over {args.m}": timeit(lambda: greedy(pred, hu, hv), repeats),
        f"nearest over {args.m}": timeit(lambda: nearest(pred, hu, hv, hu[0], hv[0]), repeats),
        "one update (m=1, fwd+bwd+Adam)": timeit(lambda: trainer.update(upd_rng, 1), repeats),
        f"SimplePredictor forward {args.m}": timeit(no_grad(lambda: simple(hu, hv)), repeats),
    }

    print(
        f"|U| = {N_USERS:,}, |V| = {N_ITEMS:,}, d_max = {D_MAX}, m = {args.m}, "
        f"mean params used = {used:,.0f} ({used / (D_MAX * (N_USERS + N_ITEMS)):.1%} of full)"
    )
    print(f"features: {source}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, times in rows.items():
        print(
            f"{name:34s} median {statistics.median(times) * 1e3:8.1f} ms "
            f"(min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f}, {repeats} repeats)"
        )


if __name__ == "__main__":
    main()
