"""How the search machinery and a training step scale with the number of rows (docs/SCALE.md).

Synthetic tables of N rows (60 % users, 40 % items, Poisson(17) / Poisson(12) frequencies as in
``bench_sampler.py``), d_max = 128, B at ``--sparsity``. Per N, in a fresh process (so that the
peak RSS is this N's):

- ``search``: sample m = 100 actions (``BoundedSampler.sample_batch``), rebuild the sizes of one
  action (``RankAssignment.sizes``), build the DeepSets predictor from the frequencies, score the
  m candidates (``forward`` under no_grad), greedy and nearest selection, one predictor update
  (forward + backward + Adam), and the SimplePredictor's forward; the peak RSS growth over the
  set-up is printed per phase;
- ``step``: MF (and LightGCN with ``--lightgcn``) training steps of ``fit``'s stepper on a random
  bipartite graph with ``--degree`` interactions per user (12: about 7 per row, as Gowalla P's
  513,126 over 70,839 rows), 10,000-user batches: the probe's step.

A least-squares line t = a + b · N over the row counts gives the per-row cost b.

    python benchmarks/bench_scale.py                      # search at 1e4, 1e5, 1e6 rows
    python benchmarks/bench_scale.py --part step --rows 100000 300000 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _median(fn: Callable[[], object], repeats: int) -> float:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def _search(n: int, m: int, sparsity: float, repeats: int) -> dict[str, float]:
    import torch

    from embudget.budget.core import Budget
    from embudget.search import BoundedSampler, RankAssignment
    from embudget.search.predictor import (
        DeepSetsPredictor,
        PredictorTrainer,
        SimplePredictor,
        greedy,
        nearest,
    )

    torch.set_num_threads(1)
    n_users = int(n * 0.6)
    n_items = n - n_users
    rng = np.random.default_rng(0)
    uf, vf = rng.poisson(17, n_users), rng.poisson(12, n_items)
    B = Budget(sparsity=sparsity).resolve(n, 128)
    sampler = BoundedSampler(n_users, n_items, B)
    out: dict[str, float] = {}
    base = _rss_mb()
    t0 = time.perf_counter()
    ranks = RankAssignment(uf, vf)
    out["rank assignment (once)"] = time.perf_counter() - t0
    batch = sampler.sample_batch(m, rng)  # warm-up
    out[f"sample {m}"] = _median(lambda: sampler.sample_batch(m, rng), repeats)
    out["rss sample MB"] = _rss_mb() - base
    act = batch.actions()[0]
    out["sizes of 1 action"] = _median(lambda: ranks.sizes(act), repeats)
    t0 = time.perf_counter()
    pred = DeepSetsPredictor.from_freqs(uf, vf, d_max=128, generator=torch.Generator())
    out["predictor build (once)"] = time.perf_counter() - t0
    hu, hv = batch.hist_u, batch.hist_v
    hu_t, hv_t = torch.from_numpy(hu), torch.from_numpy(hv)
    before = _rss_mb()

    def fwd() -> object:
        with torch.no_grad():
            return pred(hu_t, hv_t)

    fwd()
    out[f"deepsets forward {m}"] = _median(fwd, repeats)
    out["rss forward MB"] = _rss_mb() - before
    out[f"greedy over {m}"] = _median(lambda: greedy(pred, hu, hv), repeats)
    out[f"nearest over {m}"] = _median(lambda: nearest(pred, hu, hv, hu[0], hv[0]), repeats)
    trainer = PredictorTrainer(pred)
    trainer.add((hu[0], hv[0]), 0.9)
    upd = np.random.default_rng(1)
    before = _rss_mb()
    trainer.update(upd, 1)
    out["one update"] = _median(lambda: trainer.update(upd, 1), repeats)
    out["rss update MB"] = _rss_mb() - before
    simple = SimplePredictor(n_users, n_items, d_max=128)

    def simple_fwd() -> object:
        with torch.no_grad():
            return simple(hu, hv)

    out[f"simple forward {m}"] = _median(simple_fwd, repeats)
    out["peak rss MB"] = _rss_mb()
    return out


def _graph(n_users: int, n_items: int, degree: int, seed: int = 0) -> object:
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(n_users), degree)
    # items drawn with a popularity skew (Zipf-like ranks), duplicates merged
    cols = np.minimum((rng.pareto(1.2, rows.size) * n_items / 50).astype(np.int64), n_items - 1)
    a = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(n_users, n_items))
    a.sum_duplicates()
    a.data[:] = 1.0
    return a


def _step(n: int, models: list[str], degree: int, steps: int) -> dict[str, float]:
    from types import SimpleNamespace

    import torch

    from embudget.models import build_model
    from embudget.training.fit import Schedule, _Stepper

    torch.set_num_threads(1)
    n_users = int(n * 0.6)
    n_items = n - n_users
    train = _graph(n_users, n_items, degree)
    out: dict[str, float] = {"nnz": float(train.nnz)}  # type: ignore[attr-defined]
    for name in models:
        model = build_model(name, n_users, n_items, train, d_max=128, generator=torch.Generator())
        data = SimpleNamespace(train=train)
        st = _Stepper(model, data, Schedule(), 10_000, 0, torch.device("cpu"))  # type: ignore[arg-type]
        st.run(1)  # Adam state allocated
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            st.run(1)
            st.mean_loss()
            times.append(time.perf_counter() - t0)
        out[f"{name} step"] = statistics.median(times)
        t0 = time.perf_counter()
        st.opt.step()  # the optimiser alone, on the last step's gradient
        out[f"{name} adam"] = time.perf_counter() - t0
        del st, model
    out["peak rss MB"] = _rss_mb()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--part", choices=["search", "step"], default="search")
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--m", type=int, default=100)
    ap.add_argument("--sparsity", type=float, default=0.8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lightgcn", action="store_true", help="also time LightGCN steps")
    ap.add_argument("--degree", type=int, default=12, help="interactions per user (step)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps (step)")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        if args.part == "search":
            res = _search(args.worker, args.m, args.sparsity, args.repeats)
        else:
            models = ["mf", "lightgcn"] if args.lightgcn else ["mf"]
            res = _step(args.worker, models, args.degree, args.steps)
        print(json.dumps(res))
        return
    print(f"load average {os.getloadavg()[0]:.2f} at start; 1 torch thread; part {args.part}")
    results = {}
    for n in args.rows:
        cmd = [sys.executable, __file__, "--worker", str(n), *sys.argv[1:]]
        line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[n] = json.loads(line.strip().splitlines()[-1])
        cells = ", ".join(f"{k} {v:.4g}" for k, v in results[n].items())
        print(f"N = {n:>10,}: {cells}", flush=True)
    ns = np.array(args.rows, dtype=np.float64)
    for key in results[args.rows[0]]:
        ys = np.array([results[n][key] for n in args.rows])
        if len(ns) > 1:
            b, a = np.polyfit(ns, ys, 1)
            print(f"{key:28s} fit a + b·N: a = {a:.4g}, b = {b:.4g} per row")
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
