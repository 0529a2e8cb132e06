"""Wall time of a BET search with its probes on Ray workers (``--workers``), against the serial
loop, for one and two probes per iteration (``search.probes_per_iteration`` = q).

Each setting runs ``--repeats`` searches into fresh run directories sharing one Θ0 cache (Θ0 is
pretrained once, by a warm-up run, and not timed). Printed per setting: the median of the
search phase (``RunResult.timing.search``: the T iterations, with the actors' start), the
median of the whole ``run_search`` call (also retraining the top candidate and testing), the
probes run, and the seconds the local Ray took to start (once per worker count).

With q = 1 only the random-selection iterations (t mod 5 = 3) can run beside the chain, so
the best speed-up over serial is 5/4 for ``bet`` (min(T, workers) for ``bet-random``); q = 2
probes twice as many actions in about the time of q = 1 when two workers are free.

    python benchmarks/bench_ray.py                                  # LightGCN fast, gowalla-mini
    python benchmarks/bench_ray.py --dataset gowalla --iterations 5 --repeats 1
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

from embudget.config import load_config
from embudget.pipeline.run import run_search
from embudget.search.parallel import ray_workers

#: (label, workers or None for the serial loop, probes per iteration)
SETTINGS = [
    ("serial, q=1", None, 1),
    ("1 worker, q=1", 1, 1),
    ("2 workers, q=1", 2, 1),
    ("serial, q=2", None, 2),
    ("2 workers, q=2", 2, 2),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="gowalla-mini")
    ap.add_argument("--model", default="lightgcn")
    ap.add_argument("--method", default="bet")
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pretrain-steps", type=int, default=200, help="cap on Θ0's training")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        root = Path(tmp)
        overrides = [
            f"data.name={args.dataset}",
            f"model.name={args.model}",
            f"search.method={args.method}",
            f"search.iterations={args.iterations}",
            f"train.max_steps={args.pretrain_steps}",
            "search.retrain.top=1",
            "threads=1",
            f"cache_dir={root / 'cache'}",
            *args.set,
        ]

        def one(q: int, out: Path) -> tuple[float, float, int]:
            cfg = load_config(overrides=[*overrides, f"search.probes_per_iteration={q}"], fast=True)
            t0 = time.perf_counter()
            res = run_search(cfg, out, progress=False)
            return res.timing.search, time.perf_counter() - t0, res.n_probes

        one(1, root / "warm-up")  # pretrains Θ0 into the shared cache
        print(
            f"{args.method} {args.model} (fast) on {args.dataset}, T = {args.iterations}, "
            f"{args.repeats} repeat(s), one torch thread per process"
        )
        print(f"{'setting':<16} {'search s':>9} {'run s':>8} {'probes':>7} {'ray start s':>12}")
        n = 0
        for label, workers, q in SETTINGS:
            t0 = time.perf_counter()
            ctx = ray_workers(workers) if workers else contextlib.nullcontext()
            with ctx:
                start = time.perf_counter() - t0
                runs = []
                for _ in range(args.repeats):
                    n += 1
                    runs.append(one(q, root / f"run{n}"))
            search_s = statistics.median(r[0] for r in runs)
            run_s = statistics.median(r[1] for r in runs)
            ray_s = f"{start:.1f}" if workers else "-"
            print(f"{label:<16} {search_s:>9.2f} {run_s:>8.2f} {runs[0][2]:>7} {ray_s:>12}")


if __name__ == "__main__":
    main()
