"""Wall time of one BET search iteration on Gowalla (protocol P, d_max = 128), split into its
parts: sampling 100 candidates, predictor scoring + selection, the probe's fine-tune, the probe's
evaluation, and the predictor update (bet.md §5–§6, §10).

Θ0 is a freshly initialised full-size model: the cost of a probe does not depend on how well
Θ0 is trained. The fine-tune runs ``--epochs`` epochs (faithful h = 10; the default here, 1,
is scaled to h = 10 in the printed estimate, since every epoch costs the same).

    python benchmarks/bench_search_iteration.py --models mf lightgcn --repeats 3
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch

from embudget.budget.core import Budget
from embudget.data import load_dataset
from embudget.models import build_model
from embudget.search.actions import RankAssignment
from embudget.search.predictor import DeepSetsPredictor, PredictorTrainer, greedy
from embudget.search.sampler import BoundedSampler
from embudget.training.fit import Schedule, finetune, validate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["mf", "lightgcn"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--sparsity", type=float, default=0.8)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    ds = load_dataset("gowalla", protocol="paper")
    B = Budget(sparsity=args.sparsity).resolve(ds.n_entities, 128)
    ra = RankAssignment(ds.user_freq, ds.item_freq)
    sampler = BoundedSampler(ds.n_users, ds.n_items, B)
    pred = DeepSetsPredictor.from_freqs(ds.user_freq, ds.item_freq)
    trainer = PredictorTrainer(pred)
    steps_per_epoch = math.ceil(ds.train.nnz / 10000)
    print(
        f"gowalla P: {ds.n_users} users, {ds.n_items} items, B = {B:,}, "
        f"{steps_per_epoch} steps/epoch, torch threads {torch.get_num_threads()}, "
        f"device {device} {torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}"
    )
    for name in args.models:
        model = build_model(name, ds.n_users, ds.n_items, ds.train, d_max=128).to(device)
        theta0 = {k: v.clone() for k, v in model.state_dict().items()}
        parts: dict[str, list[float]] = {
            k: [] for k in ("sample", "select", "finetune", "evaluate", "update")
        }
        for rep in range(args.repeats):
            rng = np.random.default_rng(rep)
            t0 = time.perf_counter()
            batch = sampler.sample_batch(100, rng)
            t1 = time.perf_counter()
            idx = greedy(pred, batch.hist_u, batch.hist_v)
            t2 = time.perf_counter()
            model.load_state_dict(theta0)
            us, vs = ra.sizes_batch(batch.hist_u[idx : idx + 1], batch.hist_v[idx : idx + 1])
            model.set_sizes(us[0], vs[0])
            finetune(
                model,
                ds,
                steps=args.epochs * steps_per_epoch,
                schedule=Schedule(),
                batch_users=10000,
                seed=rep,
            )
            _sync(device)
            t3 = time.perf_counter()
            q = validate(model, ds, "valid").means["quality"]
            t4 = time.perf_counter()
            trainer.add((batch.hist_u[idx], batch.hist_v[idx]), q)
            trainer.update(rng, 2)
            t5 = time.perf_counter()
            for k, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
                parts[k].append(v)
        med = {k: statistics.median(v) for k, v in parts.items()}
        h10 = med["finetune"] / args.epochs * 10
        total = med["sample"] + med["select"] + h10 + med["evaluate"] + med["update"]
        print(f"\n{name} (median of {args.repeats})")
        print(f"  sample 100 candidates      {med['sample']:8.3f} s")
        print(f"  predictor score + select   {med['select']:8.3f} s")
        print(
            f"  fine-tune {args.epochs} epoch(s)         {med['finetune']:8.3f} s"
            f"  -> h = 10: {h10:.1f} s"
        )
        print(f"  evaluate (all valid users) {med['evaluate']:8.3f} s")
        print(f"  predictor update (2)       {med['update']:8.3f} s")
        print(
            f"  one faithful iteration     {total:8.1f} s"
            f"  (non-probe share {100 * (total - h10 - med['evaluate']) / total:.1f} %)"
        )


def _sync(device: torch.device) -> None:
    """Wait for queued device work, so a host clock reads the time it really took."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
