"""Learning-rate check of a backbone's full-size training (the check MF needed, BENCHMARKS.md).

Trains the backbone of ``--model`` from the same initialisation once per (learning rate, L2
weight) pair, for ``--steps`` steps, validating every ``--eval-every`` steps on a fixed sample
of ``--eval-users`` validation users (the same users for every run, so curves compare without
sampling noise; a full NeuMF ranking of Gowalla's 29,858 users costs ~2 minutes). No early
stopping: the whole curve is the result. Prints one row per run and writes the curves as JSON.

    python benchmarks/bench_lr.py --model ncf --lr 0.03,0.005,0.001 --steps 2000 \
        --out results/lr-ncf.json --set threads=1

``--pretrain nested`` trains random prefixes as the fast mode's Θ0 does (validation at full
size). Runs already in ``--out`` are kept and not trained again, so two processes on disjoint
learning rates can write separate files that are merged by hand.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from embudget.config import load_config
from embudget.io import resolve_device, write_json
from embudget.pipeline.build import PRETRAIN_STREAM, load_data, make_model
from embudget.pipeline.pretrain import nested_sizes
from embudget.seeds import int_seed
from embudget.training.fit import fit, validation_users


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="ncf")
    p.add_argument("--dataset", default="gowalla")
    p.add_argument("--lr", type=floats, default=[0.03, 0.005, 0.001])
    p.add_argument("--reg", type=floats, default=None, help="L2 weights (default: backbone's)")
    p.add_argument("--pretrain", choices=["standard", "nested"], default="standard")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-users", type=int, default=3000)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    base = load_config(
        overrides=[
            f"data.name={args.dataset}",
            f"model.name={args.model}",
            f"search.pretrain.mode={args.pretrain}",
            *args.set,
        ],
        fast=False,
    )
    if base.threads:
        import torch

        torch.set_num_threads(base.threads)
    device = resolve_device(base.device)
    ds = load_data(base)
    n_valid = validation_users(ds, 1.0, base.seed, "bench-lr-users").size
    fraction = min(1.0, args.eval_users / n_valid)
    users = validation_users(ds, fraction, base.seed, "bench-lr-users")

    out: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    runs: dict[str, Any] = out.setdefault("runs", {})
    out.update(
        model=args.model,
        dataset=args.dataset,
        pretrain=args.pretrain,
        eval_users=len(users),
        config={"train": vars(base.train) | {"max_steps": args.steps}},
    )
    regs: list[float | None] = list(args.reg) if args.reg else [base.model.reg]
    for reg in regs:
        for lr in args.lr:
            key = f"lr={lr:g} reg={'default' if reg is None else f'{reg:g}'}"
            if key in runs:
                continue
            cfg = replace(
                base,
                model=replace(base.model, reg=reg),
                train=replace(
                    base.train,
                    lr=lr,
                    max_steps=args.steps,
                    eval_every_steps=args.eval_every,
                    patience=10**9,
                ),
            )
            model = make_model(cfg, ds, device, PRETRAIN_STREAM)
            t0 = time.perf_counter()
            fr = fit(
                model,
                ds,
                cfg.train,
                seed=int_seed(cfg.seed, PRETRAIN_STREAM),
                eval_users=users,
                desc=key,
                sizes_at=nested_sizes(cfg, ds),
            )
            curve = [
                {
                    "step": h["step"],
                    "loss": h["loss"],
                    "recall@20": h["valid"]["recall@20"],
                    "ndcg@20": h["valid"]["ndcg@20"],
                }
                for h in fr.history
            ]
            runs[key] = {
                "lr": lr,
                "reg": reg,
                "best_step": fr.best_step,
                "best_recall@20": max(c["recall@20"] for c in curve),
                "seconds": time.perf_counter() - t0,
                "curve": curve,
            }
            write_json(args.out, out)
    print(f"{args.model} on {args.dataset} ({args.pretrain}), {len(users)} validation users")
    print("| run | best step | best valid R@20 | last valid R@20 | last loss | s |")
    print("|---|---:|---:|---:|---:|---:|")
    for key, r in runs.items():
        last = r["curve"][-1]
        print(
            f"| {key} | {r['best_step']} | {r['best_recall@20']:.4f} | {last['recall@20']:.4f} "
            f"| {last['loss']:.4f} | {r['seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
