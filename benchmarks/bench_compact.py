"""Compact tables on Gowalla (protocol P) at d_max = 128 and 80/90/95 % sparsity.

Sizes: a BET-style action, i.e. one draw of the bounded sampler assigned by frequency rank
(``search.sampler`` + ``RankAssignment``), unless ``--sizes RUN_DIR/sizes.npz`` gives the sizes
of a real search. Four measurements:

1. bytes of the compact tables (jagged fp32, bucketed fp32, jagged int8) vs the dense fp32 table;
   target: ≤ (1 − c) of dense plus an index overhead under 2 % of dense;
2. peak RSS of training LightGCN for one epoch (``--quick``: 2 steps; the peak is reached after
   the first Adam step), compact vs masked, each in a fresh subprocess (``resource.getrusage``);
3. peak RSS of recommending 20 items to 1,000 users from an export (compact) vs from the masked
   model's dense state (masked), each in a fresh subprocess; target: peak RSS falls with the
   budget;
4. lookup time per 10,000-id batch (forward, and forward + backward), compact vs masked vs a
   plain dense ``weight[ids]``; target: compact within 1.5× of dense;
5. test Recall@20 of an MF model trained compact at 80 %, exported at fp32 / fp16 / int8
   (row-wise, per-row scale and bias): the change int8 causes (``--quick``: Last.fm, 300 steps;
   otherwise Gowalla, 3,000 steps — a short training, not a converged model).

    python benchmarks/bench_compact.py --quick     # fewer steps and repeats
    python benchmarks/bench_compact.py             # one full epoch per training run
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

SPARSITIES = (0.8, 0.9, 0.95)
D_MAX = 128


def _sizes(sparsity: float, sizes_file: str | None) -> tuple[np.ndarray, np.ndarray]:
    from embudget.budget.core import Budget
    from embudget.data import load_dataset
    from embudget.search.actions import RankAssignment
    from embudget.search.sampler import BoundedSampler

    if sizes_file:
        from embudget.io import load_npz

        s = load_npz(sizes_file)
        return s["user_sizes"].astype(np.int64), s["item_sizes"].astype(np.int64)
    ds = load_dataset("gowalla")
    B = Budget(sparsity=sparsity).resolve(ds.n_entities, D_MAX)
    sampler = BoundedSampler(ds.n_users, ds.n_items, B, d_max=D_MAX)
    batch = sampler.sample_batch(1, np.random.default_rng(0))
    from embudget.search.actions import Action

    action = Action(batch.hist_u[0], batch.hist_v[0], batch.records[0])
    return RankAssignment(ds.user_freq, ds.item_freq).sizes(action)


def _model(storage: str, us: np.ndarray, vs: np.ndarray, name: str = "lightgcn") -> Any:
    from embudget.data import load_dataset
    from embudget.models import build_model
    from embudget.tables.compact import to_compact

    ds = load_dataset("gowalla")
    model = build_model(
        name, ds.n_users, ds.n_items, ds.train, D_MAX, generator=torch.Generator().manual_seed(0)
    )
    model.set_sizes(us, vs)
    if storage == "compact":
        to_compact(model)
    return model, ds


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------------------------
# children (fresh processes, so that ru_maxrss is theirs alone)
# --------------------------------------------------------------------------------------------
def child_train(args: argparse.Namespace) -> dict[str, Any]:
    from embudget.data import BPRSampler

    us, vs = _sizes(args.sparsity, args.sizes)
    before = _peak_mb()
    model, ds = _model(args.storage, us, vs)
    sampler = BPRSampler(ds.train, batch_users=10000, rng=np.random.default_rng(0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)  # as embudget.training.fit
    steps = args.steps or -(-ds.train.nnz // 10000)
    t0 = time.perf_counter()
    model.train()
    for _ in range(steps):
        users, pos, neg = sampler.sample()
        loss = model.loss(users, pos, neg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return {
        "peak_rss_mb": _peak_mb(),
        "rss_before_model_mb": before,
        "steps": steps,
        "seconds": time.perf_counter() - t0,
        "trainable_params": sum(p.numel() for p in model.parameters()),
    }


def child_serve(args: argparse.Namespace) -> dict[str, Any]:
    from embudget.deploy.serve import Recommender

    t0 = time.perf_counter()
    if args.storage == "compact":
        rec = Recommender.load(args.path)
    else:
        from safetensors.torch import load_file

        from embudget.deploy.export import load
        from embudget.tables.compact import load_weights

        ex = load(args.path)  # ids and interactions; the model is replaced by the dense one
        from embudget.models import build_model

        dense = build_model("lightgcn", ex.model.n_users, ex.model.n_items, ex.train, D_MAX)
        del ex.model
        load_weights(dense, load_file(args.dense))
        ex.model = dense.eval()
        rec = Recommender(ex)
    users = rec.exported.user_ids[:1000]
    out = rec.recommend(users, k=20)
    return {
        "peak_rss_mb": _peak_mb(),
        "seconds": time.perf_counter() - t0,
        "users": int(out.counts.size),
    }


def _run_child(*argv: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", *argv]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"child {argv} failed:\n{res.stderr[-3000:]}")
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


# --------------------------------------------------------------------------------------------
# the parent
# --------------------------------------------------------------------------------------------
def bench_bytes(sizes: dict[float, tuple[np.ndarray, np.ndarray]]) -> None:
    from embudget.budget.usage import Usage

    print("\n== 1. bytes of the ID tables (dense fp32 table = 100 %)")
    print(
        "sparsity  layout    dtype  values B     index B   meta B    total B      % dense  index %"
    )
    for c, (us, vs) in sizes.items():
        for layout, dtype in (("jagged", "fp32"), ("bucketed", "fp32"), ("jagged", "int8")):
            r = Usage.of_sizes(us, vs, d_max=D_MAX, dtype=dtype, layout=layout).to_dict()
            b = r["bytes"]
            print(
                f"{c:<9} {layout:<9} {dtype:<6} {b['values']:>11,} {b['index']:>10,} "
                f"{b['row_meta']:>8,} {b['embedding']:>11,}  "
                f"{100 * b['fraction_of_dense_table']:6.2f}  "
                f"{100 * b['index_fraction_of_dense_table']:5.2f}"
            )
        print(
            f"{'':9} dense     fp32   {r['bytes']['dense_table']:>11,}   "
            f"(target: <= {1 - c:.0%} + < 2 %)"
        )


def bench_lookup(sizes: dict[float, tuple[np.ndarray, np.ndarray]], repeats: int) -> None:
    print("\n== 4. lookup of a 10,000-id batch, user + item tables of Gowalla (median ms)")
    print("sparsity  table     fwd     fwd+bwd   full() fwd")
    g = torch.Generator().manual_seed(0)
    for c, (us, vs) in sizes.items():
        _lookup_case(c, np.concatenate([us, vs]), g, repeats)


def _lookup_case(c: float, s: np.ndarray, g: torch.Generator, repeats: int) -> None:
    from embudget.tables.compact import CompactEmbedding
    from embudget.tables.sized import SizedEmbedding

    masked = SizedEmbedding(s.size, D_MAX, s)
    with torch.no_grad():
        masked.weight.normal_(generator=g)
    compact = CompactEmbedding.from_sized(masked)
    dense = torch.nn.Parameter(masked.weight.detach().clone())
    ids = torch.randint(0, s.size, (10000,), generator=g)
    cases = {
        "dense": lambda: dense[ids],
        "masked": lambda: masked(ids),
        "compact": lambda: compact(ids),
    }
    fulls = {"dense": lambda: dense * 1.0, "masked": masked.full, "compact": compact.full}
    for name, fn in cases.items():
        fwd = _times(fn, repeats)
        both = _times(lambda fn=fn: fn().square().sum().backward(), repeats)
        full = _times(fulls[name], repeats)
        print(f"{c:<9} {name:<8} {fwd:7.2f}  {both:8.2f}  {full:8.2f}")


def bench_precision(dataset: str, steps: int, sizes_file: str | None) -> None:
    """Recall@20 on the test split of an MF model trained compact at 80 %, by export dtype."""
    from embudget.budget.core import Budget
    from embudget.config import TrainConfig
    from embudget.data import load_dataset
    from embudget.deploy.export import export_model, load
    from embudget.models import build_model
    from embudget.search.actions import Action, RankAssignment
    from embudget.search.sampler import BoundedSampler
    from embudget.tables.compact import to_compact
    from embudget.training.evaluate import evaluate
    from embudget.training.fit import fit

    ds = load_dataset(dataset)
    B = Budget(sparsity=0.8).resolve(ds.n_entities, D_MAX)
    batch = BoundedSampler(ds.n_users, ds.n_items, B, d_max=D_MAX).sample_batch(
        1, np.random.default_rng(0)
    )
    us, vs = RankAssignment(ds.user_freq, ds.item_freq).sizes(
        Action(batch.hist_u[0], batch.hist_v[0], batch.records[0])
    )
    model = build_model(
        "mf", ds.n_users, ds.n_items, ds.train, D_MAX, generator=torch.Generator().manual_seed(0)
    )
    model.set_sizes(us, vs)
    to_compact(model)
    cfg = TrainConfig(batch_users=2048, eval_every_steps=steps, patience=1, max_steps=steps)
    fit(model, ds, cfg, seed=0)
    print(f"\n== 5. export precision: MF on {dataset}, 80 %, {steps} training steps (test split)")
    print("dtype  table bytes   recall@20   change")
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("fp32", "fp16", "int8"):
            path = Path(tmp) / f"{dtype}.npz"
            meta = export_model(
                model,
                path,
                fmt="npz",
                dtype=dtype,
                train=ds.train,
                user_ids=ds.user_ids,
                item_ids=ds.item_ids,
                with_history=True,  # LightGCN propagates over the stored training graph
            )
            ex = load(path)
            with torch.no_grad():
                r = evaluate(ex.model.scorer(), ds, split="test", ks=(20,)).means["recall@20"]
            base = r if base is None else base
            print(
                f"{dtype:<6} {meta['memory']['bytes']['embedding']:>11,}   {r:.5f}   "
                f"{r - base:+.5f}"
            )


def _times(fn: Any, repeats: int) -> float:
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2 training steps, 5 lookup repeats")
    p.add_argument("--sizes", help="sizes.npz of a Gowalla run (default: a sampled BET action)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-rss", action="store_true", help="skip the peak-RSS subprocesses")
    p.add_argument("--skip-precision", action="store_true", help="skip the int8 recall check")
    p.add_argument("--only-precision", action="store_true", help="only the int8 recall check")
    p.add_argument("--child", choices=["train", "serve"], help=argparse.SUPPRESS)
    p.add_argument("--storage", choices=["compact", "masked"], help=argparse.SUPPRESS)
    p.add_argument("--sparsity", type=float, help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    p.add_argument("--dense", help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        out = child_train(args) if args.child == "train" else child_serve(args)
        print(json.dumps(out))
        return

    if args.only_precision:
        bench_precision("lastfm" if args.quick else "gowalla", 300 if args.quick else 3000, None)
        return
    print(f"torch {torch.__version__}, {args.threads} thread(s); Gowalla P, d_max {D_MAX}")
    print("sizes:", args.sizes or "one bounded-sampler action per budget, by frequency rank")
    sizes = {c: _sizes(c, args.sizes) for c in SPARSITIES}
    bench_bytes(sizes)
    if not args.skip_rss:
        steps = 2 if args.quick else 0
        print(f"\n== 2. peak RSS, LightGCN training ({steps or 'one epoch of'} steps, batch 10k)")
        print("sparsity  storage   peak RSS MB   trainable params   s/step")
        for c in SPARSITIES:
            for storage in ("masked", "compact"):
                r = _run_child(
                    "train",
                    "--storage",
                    storage,
                    "--sparsity",
                    str(c),
                    "--steps",
                    str(steps),
                    "--threads",
                    str(args.threads),
                    *(["--sizes", args.sizes] if args.sizes else []),
                )
                print(
                    f"{c:<9} {storage:<9} {r['peak_rss_mb']:11.1f}   {r['trainable_params']:>16,}"
                    f"   {r['seconds'] / r['steps']:.2f}"
                )
        print("\n== 3. peak RSS, recommend k=20 for 1,000 users (LightGCN, propagation included)")
        print("sparsity  storage   peak RSS MB   file MB   seconds")
        from embudget.deploy.export import export_model
        from embudget.pipeline.rundir import save_weights
        from embudget.tables.compact import to_masked

        with tempfile.TemporaryDirectory() as tmp:
            for c, (us, vs) in sizes.items():
                model, ds = _model("compact", us, vs)
                path, dense = Path(tmp) / f"t{c}.safetensors", Path(tmp) / f"d{c}.safetensors"
                export_model(
                    model,
                    path,
                    train=ds.train,
                    user_ids=ds.user_ids,
                    item_ids=ds.item_ids,
                    with_history=True,  # LightGCN propagates over the stored training graph
                )
                save_weights(to_masked(model), dense)
                del model
                for storage, f in (("masked", dense), ("compact", path)):
                    r = _run_child(
                        "serve",
                        "--storage",
                        storage,
                        "--path",
                        str(path),
                        "--dense",
                        str(dense),
                        "--threads",
                        str(args.threads),
                    )
                    print(
                        f"{c:<9} {storage:<9} {r['peak_rss_mb']:11.1f}   "
                        f"{f.stat().st_size / 2**20:7.1f}   {r['seconds']:.1f}"
                    )
    bench_lookup(sizes, 5 if args.quick else 20)
    if not args.skip_precision:
        dataset = "lastfm" if args.quick else "gowalla"
        bench_precision(dataset, 300 if args.quick else 3000, args.sizes)


if __name__ == "__main__":
    main()
