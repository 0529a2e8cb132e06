"""Print the validation curves of fits as markdown tables (BENCHMARKS.md, "Training to
convergence"): how many steps a backbone needs to stop by the default rule, and where its
quality was at each validation.

    python benchmarks/curves.py PATH...

Each PATH is a run directory (its ``results.json``: Θ0's fit and the kept model's), a cached
Θ0 (``cache/pretrain-*.pt``), or a training checkpoint (``*.ckpt.pt``, a fit still running: the
curve so far).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from embudget.io import load_torch
from embudget.result import RESULTS_FILE, RunResult, Training


def _rows(history: list[dict[str, Any]]) -> list[str]:
    out = [
        "| step | train loss | valid Recall@20 | valid NDCG@20 | valid Q | improved |",
        "|---:|---:|---:|---:|---:|:---:|",
    ]
    for h in history:
        loss = "–" if h["loss"] is None else f"{h['loss']:.4f}"
        v = h["valid"]
        out.append(
            f"| {h['step']:,} | {loss} | {v.get('recall@20', float('nan')):.4f} | "
            f"{v.get('ndcg@20', float('nan')):.4f} | {v['quality']:.4f} | "
            f"{'*' if h['improved'] else ''} |"
        )
    return out


def _fit(name: str, training: Training | None) -> list[str]:
    if training is None:
        return [f"{name}: not recorded (run made before fits were kept)", ""]
    return [f"{name}: {training.summary()}", "", *_rows(training.to_dict()["history"]), ""]


def finished_fits(path: Path) -> list[tuple[str, Training | None]] | None:
    """The fits recorded at ``path``, by name: a run directory's Θ0 and kept model, a cached
    Θ0's fit; None for a checkpoint (a fit still running)."""
    if path.is_dir():
        res = RunResult.read(path / RESULTS_FILE)
        out: list[tuple[str, Training | None]] = []
        if res.theta0_valid is not None:  # the run used a Θ0 (not SU, SR or `train`)
            out.append(("Θ0", res.theta0_training))
        if res.method != "full":  # full keeps Θ0 itself
            out.append(("training" if res.kind == "train" else "kept model", res.training))
        return out
    if path.suffix != ".pt":
        raise SystemExit(f"{path}: not a run directory, a cached Θ0 or a checkpoint (*.pt)")
    blob = load_torch(path)
    return [("Θ0", Training.from_dict(blob["training"]))] if "training" in blob else None


def curves(path: Path) -> list[str]:
    """The markdown lines for one path."""
    done = finished_fits(path)
    if done is not None:
        return [f"### {path.name}", "", *(x for name, t in done for x in _fit(name, t))]
    blob = load_torch(path)
    if "history" in blob:  # a checkpoint of a fit in progress
        step = int(blob["stepper"]["step"])
        head = f"in progress at step {step:,}, best at {int(blob['best_step']):,}"
        return [f"### {path.name}", "", head, "", *_rows(blob["history"]), ""]
    return [f"### {path.name}", "", "no curve recorded", ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", type=Path)
    args = ap.parse_args()
    for p in args.paths:
        print("\n".join(curves(p)))


if __name__ == "__main__":
    main()
