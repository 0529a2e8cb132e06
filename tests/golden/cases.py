"""The fixed small runs whose outputs must stay bit-identical on the CPU (equivalence proof).

Every case runs on the shipped ``gowalla-mini`` with one torch thread. ``record.py`` writes
their outputs to ``golden.json``; ``test_golden.py`` reruns them and compares exactly.
What is compared (:func:`extract`): validation and test metrics, the size arrays (sha256),
the parameters used, and for searches the fitness of every probe.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from embudget.result import RunResult

#: Small but complete settings: every stage (Θ0, T iterations, top-k retraining, test) runs.
COMMON = [
    "data.name=gowalla-mini",
    "model.d_max=32",
    "train.batch_users=256",
    "train.eval_every_steps=40",
    "train.patience=2",
    "train.max_steps=160",
    "search.iterations=6",
    "search.sampler.candidates=16",
    "search.retrain.top=2",
    "budget.sparsity=0.8",
    "threads=1",
]
#: The faithful probe is a short fine-tune (1 epoch); fast mode uses each backbone's preset.
FAITHFUL = ["search.probe.epochs=1"]

METHODS = ("full", "su", "sr", "bet", "bet-random", "bet-simple")
MODELS = ("mf", "lightgcn")


def cases() -> dict[str, tuple[str, list[str], bool]]:
    """name -> (command, overrides, fast)."""
    out: dict[str, tuple[str, list[str], bool]] = {}
    for model in MODELS:
        out[f"train-{model}"] = ("train", [*COMMON, f"model.name={model}"], False)
        for fast in (False, True):
            mode = "fast" if fast else "faithful"
            for method in METHODS:
                extra = [] if fast else FAITHFUL
                overrides = [*COMMON, *extra, f"model.name={model}", f"search.method={method}"]
                out[f"{method}-{model}-{mode}"] = ("search", overrides, fast)
    # gowalla-mini is small data for fast LightGCN (every user, 50-step probes); this case keeps
    # the path large data takes (a quarter of the users, 20-step probes)
    out["bet-lightgcn-fast-large-data"] = (
        "search",
        [*COMMON, "model.name=lightgcn", "search.method=bet", "search.probe.small_data_users=0"],
        True,
    )
    return out


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a.astype(np.int64)).tobytes()).hexdigest()[:16]


def extract(run: Path) -> dict[str, Any]:
    """The compared outputs of a finished run directory."""
    result = RunResult.read(run / "results.json")
    out: dict[str, Any] = {"valid": dict(result.valid.means), "test": dict(result.test.means)}
    sizes = run / "sizes.npz"
    if sizes.is_file():
        with np.load(sizes, allow_pickle=False) as z:
            us, vs = z["user_sizes"], z["item_sizes"]
        out["user_sizes"] = _sha(us)
        out["item_sizes"] = _sha(vs)
        out["params_used"] = int(us.sum() + vs.sum())
    history = run / "history.jsonl"
    if history.is_file():
        out["fitness"] = [json.loads(line)["fitness"] for line in history.read_text().splitlines()]
    return out
