"""Fidelity of fast-mode fitness against faithful fitness (RESULTS.md, "Fast mode", 1–1c).

The reference actions and their faithful fitness r = Q(Θ0 fine-tuned h epochs) / Q0 come
either from a faithful search (its ``history.jsonl``) or, with ``--sample N``, from N fresh
draws of the bounded sampler, probed here the faithful way (standard Θ0, ``--faithful-epochs``
epochs, all validation users). Every action is re-measured with cheap probes, and the script
prints the Spearman correlation with the faithful fitness and the seconds per probe:

- ``nested`` Θ0 (every prefix trained, ``search.pretrain.mode=nested``) truncated to the action and
  fine-tuned for each of ``--steps`` steps (0 = truncation only);
- the standard Θ0 truncated and fine-tuned for each of ``--standard-steps`` (default 0 only),
  the ablation that shows what nesting buys.

Both use the fixed fitness user sample of ``--user-fraction`` (common random numbers).

    python benchmarks/fast_fidelity.py results/gowalla-mf-paper/runs/*/history.jsonl \
        --model mf --steps 0,20,50 --out results/fidelity-mf.json
    python benchmarks/fast_fidelity.py --sample 20 --faithful-epochs 2 --model lightgcn \
        --steps 0 --set train.max_steps=3000 --out results/fidelity-lightgcn.json --retest

With ``--retest`` the sampled actions are probed faithfully twice, on different fine-tuning
batches: the correlation between the two runs is the ceiling any cheaper fitness can reach.
The faithful probes run first, and the JSON is rewritten after every variant, so a run cut
short still holds its reference. Rerun with the same ``--out`` and variants already in it are
kept, not measured again (that is how a faithful reference measured on a GPU, by
``benchmarks/gpu_check.sh``, is extended with cheap variants on a CPU).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from embudget.budget.core import uniform_sizes
from embudget.config import load_config
from embudget.io import RunDir
from embudget.pipeline.build import load_data, make_model, resolve_budget
from embudget.pipeline.pretrain import pretrain
from embudget.pipeline.rundir import start_run
from embudget.search.actions import Action, RankAssignment
from embudget.search.loop import Searcher, make_sampler
from embudget.seeds import np_rng


def measure(
    cfg: Any, actions: list[Action], steps: int | None, run: RunDir, t_offset: int = 0
) -> tuple[np.ndarray, float, float, float]:
    """Fitness of every action under ``cfg`` with ``steps`` probe steps (None: the config's),
    and of SU's uniform table as a reference; (r, s/probe, Q0, r of SU). ``t_offset`` shifts
    the probe index, so fine-tuning draws other batches (a test-retest of the same actions)."""
    device = start_run(cfg, run)
    ds = load_data(cfg)
    per_entity = resolve_budget(cfg, ds).per_entity
    theta0 = pretrain(cfg, ds, device)
    assignment = RankAssignment(ds.user_freq, ds.item_freq)
    model = make_model(cfg, ds, device, "probe")
    searcher = Searcher(cfg, ds, model, theta0.state, assignment, per_entity, predictor=None)
    if steps is not None:
        searcher.probe_steps = steps
    t0 = time.perf_counter()
    r = np.array([searcher.probe(a, t_offset + t)[0] for t, a in enumerate(actions)])
    sec = (time.perf_counter() - t0) / len(actions)
    d = cfg.model.d_max
    su = Action.from_sizes(*uniform_sizes(ds.n_users, ds.n_items, per_entity, d), d)
    return r, sec, searcher.q0, searcher.probe(su, t_offset + len(actions))[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("history", nargs="?", help="history.jsonl of a faithful search")
    ap.add_argument("--sample", type=int, help="instead: probe this many sampler draws")
    ap.add_argument("--faithful-epochs", type=int, help="h of the faithful probes (--sample)")
    ap.add_argument(
        "--retest", action="store_true", help="probe the sample faithfully twice (noise ceiling)"
    )
    ap.add_argument("--model", default="mf")
    ap.add_argument("--dataset", default="gowalla")
    ap.add_argument("--sparsity", type=float, default=0.8)
    ap.add_argument("--steps", default="0,20,50", help="probe fine-tune steps to try (nested Θ0)")
    ap.add_argument("--standard-steps", default="0", help="the same from the standard Θ0")
    ap.add_argument("--user-fraction", type=float, default=0.25)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", default="results/cache")
    ap.add_argument("--workdir", default="results/fidelity-runs")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument(
        "--nested-set", action="append", default=[], metavar="KEY=VALUE", help="nested Θ0 only"
    )
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if (args.history is None) == (args.sample is None):
        ap.error("give either a history.jsonl or --sample N")
    updates: dict[str, Any] = {
        "data": {"name": args.dataset},
        "model": {"name": args.model},
        "budget": {"sparsity": args.sparsity},
        "threads": args.threads,
        "cache_dir": args.cache,
        "search": {"probe": {"user_fraction": args.user_fraction}},
    }
    out: dict[str, Any] = {"history": args.history, "rows": []}
    done: dict[str, dict[str, Any]] = {}  # variants measured by an earlier run into --out
    if args.out and Path(args.out).is_file():
        prev = json.loads(Path(args.out).read_text())
        if prev.get("history") == args.history and prev.get("sample") == args.sample:
            done = {_label(x["pretrain"], x["steps"]): x for x in prev["rows"]}
    faithful: np.ndarray | None = None
    if args.history is not None:
        rows = [json.loads(line) for line in Path(args.history).read_text().splitlines()]
        actions = [Action(np.array(h["hist_u"]), np.array(h["hist_v"])) for h in rows]
        faithful = np.array([h["fitness"] for h in rows])
        out["faithful_r"] = faithful.tolist()
        print(f"{len(rows)} actions from {args.history}; faithful r {faithful.min():.3f}..")
    else:
        actions = sample_actions(
            load_config(overrides=args.set, updates=updates, fast=False), args.sample
        )
        out["sample"] = args.sample
    out["n"] = len(actions)

    def run_variant(pre: str, steps: int | None, cfg: Any, t_offset: int = 0) -> np.ndarray:
        if _label(pre, steps) in done:
            out["rows"].append(done[_label(pre, steps)])
            print(f"{_label(pre, steps)}: measured before, kept from {args.out}")
            return np.array(done[_label(pre, steps)]["r"])
        run = RunDir(Path(args.workdir) / f"{args.model}-{pre}-{steps}")
        run.path.mkdir(parents=True, exist_ok=True)
        r, sec, q0, r_su = measure(cfg, actions, steps, run, t_offset)
        line = {"pretrain": pre, "steps": steps, "sec_per_probe": sec, "q0": q0}
        line.update(r=r.tolist(), r_su=r_su, beat_su=int((r > r_su).sum()))
        out["rows"].append(line)
        print(
            f"{pre:8s} steps {steps}: {sec:.1f} s/probe, Q0 {q0:.4f}, "
            f"best r {r.max():.4f} vs SU's {r_su:.4f} ({line['beat_su']} actions above SU)",
            flush=True,
        )
        if "faithful_r" in out:
            print(_correlate(line, out), flush=True)
        if args.out:  # after every variant: a long run keeps what it measured
            Path(args.out).write_text(json.dumps(out, indent=1))
        return r

    if faithful is None:  # sampled actions: probe them the faithful way first, on all users,
        # so a run cut short (a device time limit, a kill) still has the reference it is compared to
        faithful_updates = dict(updates)
        faithful_updates["search"] = {
            "probe": {"user_fraction": 1.0, "epochs": args.faithful_epochs},
        }
        faithful_cfg = load_config(overrides=args.set, updates=faithful_updates, fast=False)
        faithful = run_variant("faithful", None, faithful_cfg)
        out["faithful_r"] = faithful.tolist()
    variants = [("nested", int(s)) for s in args.steps.split(",")]
    variants += [("standard", int(s)) for s in args.standard_steps.split(",")]
    for pre, steps in variants:
        nested = pre == "nested"
        over = args.set + (args.nested_set if nested else [])
        run_variant(pre, steps, load_config(overrides=over, updates=updates, fast=nested))
    if args.retest and args.sample:  # the same actions, fine-tuned on other batches
        retest = run_variant("faithful-retest", None, faithful_cfg, t_offset=len(actions) + 1)
        out["faithful_mean_r"] = ((faithful + retest) / 2).tolist()
    for line in out["rows"]:
        print(_correlate(line, out))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


def _correlate(line: dict[str, Any], out: dict[str, Any]) -> str:
    """Spearman of one variant's r with the faithful r (and the faithful mean, with a retest),
    stored in ``line``; returns the printed summary."""
    line["spearman"] = float(spearmanr(line["r"], out["faithful_r"]).statistic)
    msg = f"{line['pretrain']:16s} steps {line['steps']}: Spearman {line['spearman']:+.3f}"
    if "faithful_mean_r" in out:
        line["spearman_mean"] = float(spearmanr(line["r"], out["faithful_mean_r"]).statistic)
        msg += f" (vs the mean of both faithful runs {line['spearman_mean']:+.3f})"
    return msg


def _label(pre: str, steps: int | None) -> str:
    return f"{pre} steps {steps}"


def sample_actions(cfg: Any, n: int) -> list[Action]:
    """``n`` draws of the bounded sampler at the config's budget (seeded by the config)."""
    ds = load_data(cfg)
    sampler = make_sampler(cfg, ds, resolve_budget(cfg, ds).per_entity)
    return sampler.sample_many(n, np_rng(cfg.seed, "fidelity-sample"))


if __name__ == "__main__":
    main()
