"""Closed-form repair of a truncated LightGCN table (measured, not kept).

LightGCN is linear in its ego table E: the final embeddings are F = P·E with
P = (I + Â + Â² + Â³) / 4. Truncating rows to their sizes (mask M) loses F's quality; fine-tuning
repairs part of it. This benchmark asks whether a cheap *closed-form* repair sees what
fine-tuning repairs: refit the kept coordinates by least squares so that the propagated table
matches Θ0's, min_X ‖P·(M ⊙ X) − P·E‖², by conjugate gradients on the normal equations
(columns are independent: a column's rows past their size are re-fitted from the rows that
keep it). Optionally the table is first rotated (an orthogonal map leaves every LightGCN score
unchanged) so that its leading coordinates carry the most variance of F (PCA ordering).

Two measurements:

- ``--fidelity REF.json``: the 20 sampler actions of ``benchmarks/fast_fidelity.py --sample 20``
  (same config, same draws) re-measured with the repair; Spearman ρ with REF's faithful r.
- ``--tables``: chosen tables (``su``, a run's ``sizes.npz``, or a search's ``history.jsonl``,
  whose best-fitness action is taken), repaired and evaluated on validation and test, all users.

    python benchmarks/bench_refit.py --fidelity results/fidelity-lightgcn-h10-cpu.json --iters 0,2,5
    python benchmarks/bench_refit.py --sparsity 0.9 --rotate --iters 0,2 --tables su \\
        results/gowalla-lightgcn-fast/runs/gowalla-lightgcn-bet-s0.9-seed0-2e3f3ea3/sizes.npz
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from embudget.budget.core import uniform_sizes
from embudget.config import load_config
from embudget.io import RunDir
from embudget.pipeline.build import load_data, make_model, resolve_budget
from embudget.pipeline.pretrain import pretrain
from embudget.pipeline.rundir import start_run
from embudget.search.actions import Action, RankAssignment
from embudget.training.fit import validate, validation_users

sys.path.insert(0, str(Path(__file__).parent))
from fast_fidelity import sample_actions  # noqa: E402  (the same 20 draws as the reference)


def propagation(model: Any) -> Any:
    """x ↦ P·x, the mean over LightGCN's layers, users and items stacked."""
    return lambda x: torch.cat(model.propagate(x), dim=0)


def pca_rotation(f: torch.Tensor) -> torch.Tensor:
    """Orthogonal d × d matrix whose columns are F's principal axes, largest variance first."""
    w, v = torch.linalg.eigh(f.double().T @ f.double())
    return v[:, torch.argsort(w, descending=True)].float()


def refit(
    p: Any, e0: torch.Tensor, mask: torch.Tensor, iters: list[int]
) -> dict[int, torch.Tensor]:
    """CG on M·P²·M·x = M·P²·e0 from x = M·e0, column by column (vectorised); the iterate
    after each count in ``iters`` (0 = the plain truncation)."""
    rhs = mask * p(p(e0))
    x = e0 * mask
    r = rhs - mask * p(p(x))
    d = r.clone()
    rs = (r * r).sum(0)
    out = {}
    for it in range(max(iters) + 1):
        if it in iters:
            out[it] = x.clone()
        if it == max(iters):
            break
        ad = mask * p(p(d))
        alpha = rs / (d * ad).sum(0).clamp_min(1e-30)
        x = x + alpha * d
        r = r - alpha * ad
        rs_new = (r * r).sum(0)
        d = r + rs_new / rs.clamp_min(1e-30) * d
        rs = rs_new
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fidelity", help="fast_fidelity.py JSON whose faithful_r is the reference")
    ap.add_argument("--tables", nargs="*", default=[], help="su | sizes.npz | history.jsonl")
    ap.add_argument("--theta0", choices=("standard", "nested"), default="standard")
    ap.add_argument("--sparsity", type=float, default=0.8)
    ap.add_argument("--iters", default="0,2", help="CG iteration counts to evaluate")
    ap.add_argument("--rotate", action="store_true", help="PCA-order the table first")
    ap.add_argument("--user-fraction", type=float, default=0.25, help="fitness users (fidelity)")
    ap.add_argument("--cache", default="results/cache")
    ap.add_argument("--workdir", default="results/fidelity-runs")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    iters = [int(s) for s in args.iters.split(",")]
    overrides = args.set or ["train.max_steps=3000", "train.eval_every_steps=500"]
    updates: dict[str, Any] = {
        "data": {"name": "gowalla"},
        "model": {"name": "lightgcn"},
        "budget": {"sparsity": args.sparsity},
        "threads": 1,
        "cache_dir": args.cache,
        "search": {"probe": {"user_fraction": args.user_fraction}},
    }
    cfg = load_config(overrides=overrides, updates=updates, fast=args.theta0 == "nested")
    run = RunDir(Path(args.workdir) / f"refit-{args.theta0}")
    run.path.mkdir(parents=True, exist_ok=True)
    device = start_run(cfg, run)
    ds = load_data(cfg)
    per_entity = resolve_budget(cfg, ds).per_entity
    theta0 = pretrain(cfg, ds, device)
    assignment = RankAssignment(ds.user_freq, ds.item_freq)
    model = make_model(cfg, ds, device, "probe")
    model.load_state_dict(theta0.state)
    p = propagation(model)
    with torch.no_grad():
        e0 = model.ego().clone()
        if args.rotate:
            e0 = e0 @ pca_rotation(p(e0))
    nu = ds.n_users

    def measure(us: np.ndarray, vs: np.ndarray, users: np.ndarray | None) -> dict[int, Any]:
        model.set_sizes(us, vs)
        with torch.no_grad():
            mask = torch.cat([model.user_emb.mask(), model.item_emb.mask()], 0).float()
            t0 = time.perf_counter()
            fitted = refit(p, e0, mask, iters)
            sec = (time.perf_counter() - t0) / max(1, max(iters))
        res = {}
        for it, x in fitted.items():
            with torch.no_grad():
                model.user_emb.weight.copy_(x[:nu])
                model.item_emb.weight.copy_(x[nu:])
            if users is None:
                res[it] = (validate(model, ds, "valid"), validate(model, ds, "test"), sec)
            else:
                res[it] = validate(model, ds, "valid", users=users).means["quality"]
        return res

    if args.fidelity:
        ref = json.loads(Path(args.fidelity).read_text())
        faithful = np.array(ref["faithful_r"])
        actions = sample_actions(
            load_config(overrides=overrides, updates=updates, fast=False), ref["n"]
        )
        # the fitness user sample of fast_fidelity.py's probes (the Searcher's)
        users = validation_users(ds, args.user_fraction, cfg.seed, "fitness-users")
        model.set_sizes(None, None)
        with torch.no_grad():
            model.user_emb.weight.copy_(e0[:nu])
            model.item_emb.weight.copy_(e0[nu:])
        q0 = validate(model, ds, "valid", users=users).means["quality"]
        r: dict[int, list[float]] = {it: [] for it in iters}
        for a in actions:
            for it, q in measure(*assignment.sizes(a), users).items():
                r[it].append(q / q0)
        for it in iters:
            rho = spearmanr(r[it], faithful).statistic
            print(
                f"{args.theta0} rotate={args.rotate} CG {it}: Spearman {rho:+.3f} with faithful, "
                f"r {min(r[it]):.3f}..{max(r[it]):.3f}"
            )
    for tab in args.tables:
        us, vs = table_sizes(tab, ds, per_entity, assignment)
        print(f"{tab}: users {us.mean():.1f} / items {vs.mean():.1f} dims")
        for it, (v, t, sec) in measure(us, vs, None).items():
            print(
                f"  CG {it} ({sec:.2f} s/iteration): valid Q {v.means['quality']:.4f}, "
                f"test Recall@20 {t.means['recall@20']:.4f} NDCG@20 {t.means['ndcg@20']:.4f}"
            )


def table_sizes(
    tab: str, ds: Any, per_entity: int, assignment: RankAssignment
) -> tuple[np.ndarray, np.ndarray]:
    if tab == "su":
        return uniform_sizes(ds.n_users, ds.n_items, per_entity, 128)
    if tab.endswith(".npz"):
        with np.load(tab, allow_pickle=False) as z:
            return z["user_sizes"], z["item_sizes"]
    rows = [json.loads(line) for line in Path(tab).read_text().splitlines()]
    best = max(rows, key=lambda h: h["fitness"])
    return assignment.sizes(Action(np.array(best["hist_u"]), np.array(best["hist_v"])))


if __name__ == "__main__":
    main()
