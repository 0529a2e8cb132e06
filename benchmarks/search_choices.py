"""Which tables a search ranks on top: the user/item split of its probes, from ``history.jsonl``.

A LightGCN table at a fixed budget is mostly a choice between dimensions for users and for
items, and between an even and a skewed spread of the users' sizes. This prints, per run
directory, the five best-probed actions (by measured fitness, the ones retraining would take)
as mean user size (range of user sizes) / mean item size, how many of all probes were
user-heavy (mean user size above mean item size), the mean and best probe quality of each
side, and the shape of the first probe (drawn before the predictor has seen any fitness, so
the seed decides it; a search that keeps that shape never left where it started). Reads JSON
only, so it runs on search directories whose retraining was skipped, e.g.

    embudget search ... --set search.retrain.top=1 --set search.retrain.max_steps=1
    python benchmarks/search_choices.py RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any


def _rows(run_dir: Path) -> list[dict[str, Any]]:
    with open(run_dir / "history.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _range(hist: list[int]) -> str:
    present = [size for size, n in enumerate(hist, start=1) if n]
    return f"{present[0]}-{present[-1]}" if present else "–"


def _side(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "–"
    q = [r["quality"] for r in rows]
    return f"{len(rows)}: Q {statistics.fmean(q):.4f} mean, {max(q):.4f} best"


def _shape(row: dict[str, Any]) -> str:
    return f"{row['user_size_mean']:.1f} ({_range(row['hist_u'])}) / {row['item_size_mean']:.1f}"


def summarise(run_dir: Path, top: int = 5) -> str:
    rows = _rows(run_dir)
    best = sorted(rows, key=lambda r: -r["fitness"])[:top]
    shapes = ", ".join(_shape(r) for r in best)
    users = [r for r in rows if r["user_size_mean"] > r["item_size_mean"]]
    items = [r for r in rows if r["user_size_mean"] <= r["item_size_mean"]]
    return (
        f"| {run_dir.name} | {len(rows)} | {shapes} | {_side(users)} | {_side(items)} | "
        f"{rows[0]['q0']:.4f} | {_shape(rows[0])} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories holding history.jsonl")
    ap.add_argument("--top", type=int, default=5, help="best-probed actions shown")
    args = ap.parse_args()
    print(
        f"| run | probes | top-{args.top} by fitness: mean user size (range) / mean item size | "
        "user-heavy probes | "
        "item-heavy probes | Q0 | first probe |"
    )
    print("|---|---:|---|---|---|---:|---|")
    for run in args.runs:
        print(summarise(run, args.top))


if __name__ == "__main__":
    main()
