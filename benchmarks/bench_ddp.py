"""Training steps per second with 1 and 2 data-parallel processes (training.distributed).

Each case is a fresh set of processes on Gowalla (protocol P, d_max = 128, 10,000-user
batches): every process loads the data, builds the model, draws the same global batches, trains
``--warmup`` steps and then ``--steps`` timed steps (the fit's step: its slice's forward and
backward, the gradient all-reduce over gloo, the fused Adam step on the whole table). The cases

- ``1x1``: one process, one thread (the golden runs' setting);
- ``1x2``: one process, two threads (what the two cores give without torch.distributed);
- ``2x1``: two processes (``torchrun --nproc_per_node=2``), one thread each;

run side by side, interleaved in every repeat, so a load change on the machine hits them alike;
the table gives the median steps/s over the repeats (min-max in brackets).

    python benchmarks/bench_ddp.py                       # mf and lightgcn, 3 repeats
    python benchmarks/bench_ddp.py --models mf --steps 10 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

CASES = {"1x1": (1, 1), "1x2": (1, 2), "2x1": (2, 1)}  # name -> (processes, threads each)


def _worker(args: argparse.Namespace) -> None:
    """One rank of one case: prints rank 0's timed seconds as JSON."""
    import torch

    from embudget.data import load_dataset
    from embudget.models import build_model
    from embudget.training.distributed import current
    from embudget.training.fit import Schedule, _Stepper

    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    ds = load_dataset("gowalla")
    model = build_model(
        args.model, ds.n_users, ds.n_items, ds.train, d_max=128, generator=torch.Generator()
    )
    group = current(cpu)
    st = _Stepper(model, ds, Schedule(), 10_000, 0, cpu, group=group)
    st.run(args.warmup)
    if group is not None:
        group.barrier()
    t0 = time.perf_counter()
    st.run(args.steps)
    st.mean_loss()  # the steps' values are computed (nothing is left queued)
    seconds = time.perf_counter() - t0
    if group is not None:
        import torch.distributed as dist

        dist.destroy_process_group()
    if group is None or group.is_main:
        print(json.dumps({"seconds": seconds}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_case(model: str, case: str, steps: int, warmup: int) -> float:
    """Steps per second of one fresh case."""
    procs, threads = CASES[case]
    port = _free_port()
    cmd = [sys.executable, __file__, "--worker", "--model", model, "--threads", str(threads)]
    cmd += ["--steps", str(steps), "--warmup", str(warmup)]
    running = []
    for r in range(procs):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        if procs > 1:
            env |= {
                "RANK": str(r),
                "LOCAL_RANK": str(r),
                "WORLD_SIZE": str(procs),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
            }
        else:
            for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
                env.pop(k, None)
        running.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True))
    outs = [p.communicate()[0] for p in running]
    if any(p.returncode for p in running):
        raise SystemExit(f"{model} {case} failed")
    seconds = float(json.loads(outs[0].strip().splitlines()[-1])["seconds"])
    return steps / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["mf", "lightgcn"])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--steps", type=int, default=20, help="timed steps per case")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(args)
        return
    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.2f} at start")
    for model in args.models:
        rates: dict[str, list[float]] = {c: [] for c in args.cases}
        for _ in range(args.repeats):
            for case in args.cases:
                rates[case].append(_run_case(model, case, args.steps, args.warmup))
        base = statistics.median(rates[args.cases[0]])
        for case, r in rates.items():
            med = statistics.median(r)
            print(
                f"{model:9s} {case}: {med:6.2f} steps/s [{min(r):.2f}-{max(r):.2f}]"
                f"  x{med / base:.2f} of {args.cases[0]}"
            )
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
