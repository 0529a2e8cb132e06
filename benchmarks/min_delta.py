"""What ``train.min_delta`` would have saved: replay recorded fits' validation curves under the
stopping rule with several minimum gains (BENCHMARKS.md, "Training to convergence").

    python benchmarks/min_delta.py RUN_DIR_OR_CACHED_THETA0... [--deltas 0.0005,0.001,0.002]

Training does not depend on when it stops, so a fit that stops earlier follows the same curve
up to its stop: the replay gives, exactly, the step where each fit would have stopped, the step
and validation quality Q of the weights it would have kept, and the steps saved. The patience
(in validations) is read from the recorded fit: a fit that stopped early ended on ``patience``
validations without improvement; fits that the step cap ended are left out. The replay with
min_delta 0 must give the recorded stop and best step, which checks it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from curves import finished_fits  # a sibling script

from embudget.result import Training
from embudget.training.fit import StopRule


def replay(history: list[dict[str, Any]], patience: int, delta: float) -> tuple[int, int, float]:
    """(stop step, best step, best Q) of the recorded curve under ``delta``."""
    rule, best_step = StopRule(patience, delta), 0
    for h in history:
        improved, _ = rule.observe(h["valid"]["quality"])
        if improved:
            best_step = h["step"]
        if rule.stop:
            break
    return int(h["step"]), best_step, rule.best_q


def rows(name: str, fit: Training, deltas: list[float]) -> list[str]:
    history = fit.to_dict()["history"]
    patience = 0
    for h in reversed(history):
        if h["improved"]:
            break
        patience += 1
    recorded = replay(history, patience, 0.0)
    assert recorded[:2] == (fit.steps, fit.best_step), (name, recorded, fit.summary())
    out = []
    for d in deltas:
        stop, best, q = replay(history, patience, d)
        saved = 1 - stop / fit.steps
        out.append(
            f"| {name} | {d:g} | {stop:,} ({best:,}) | {fit.steps:,} ({fit.best_step:,}) | "
            f"{100 * saved:.0f} % | {q:.4f} | {q - recorded[2]:+.4f} |"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", type=Path)
    ap.add_argument("--deltas", default="0.0005,0.001,0.002")
    args = ap.parse_args()
    deltas = [float(x) for x in args.deltas.split(",")]
    print("| fit | min_delta | stop (best) | recorded (best) | steps saved | best Q | Q given up |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for path in args.paths:
        for name, fit in finished_fits(path) or []:
            if fit is None or not fit.stopped_early:
                continue  # not recorded, or ended by the step cap
            print("\n".join(rows(f"{path.name} {name}", fit, deltas)))


if __name__ == "__main__":
    main()
