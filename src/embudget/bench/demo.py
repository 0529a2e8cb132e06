"""The README's main job: the full-size model, SU and BET at one budget, side by side.

The demo runs the command line's default procedure for the backbone (fast mode for MF and
LightGCN, ``config.FAST_BY_DEFAULT``; ``fast=False`` for the faithful one), scaled down so
that the three runs finish in a few minutes on two CPU cores with MF on the shipped Gowalla
data; every reduction is listed below and recorded in each run's ``config.yaml``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embudget.config import is_fast, load_config
from embudget.pipeline.run import run_search

#: Reductions of the training settings (bet.md Appendix A) that make the demo short.
DEMO_TRAIN: tuple[str, ...] = (
    "train.eval_every_steps=250",  # faithful: 2000
    "train.patience=2",  # faithful: 3
    "train.max_steps=1500",  # faithful: 100000
    "search.retrain_top=1",  # faithful: 5
)
#: Further reductions of the faithful search (fast mode's probes cost seconds and need none).
DEMO_FAITHFUL_SEARCH: tuple[str, ...] = (
    "search.iterations=10",  # T, faithful: 50
    "search.finetune_epochs=2",  # h, faithful: 10
    "search.fitness_user_fraction=0.25",  # faithful: all validation users
)

METHODS = ("full", "su", "bet")


def run_demo(
    out: str | Path,
    *,
    dataset: str = "gowalla",
    model: str = "mf",
    sparsity: float = 0.8,
    overrides: Sequence[str] = (),
    fast: bool | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run full, SU and BET into ``out/<method>`` (finished runs are reused) and return their
    results. A shared pretrained model is cached in ``out/cache``. ``fast``: as in
    :func:`embudget.config.load_config` (None: the backbone's default mode)."""
    out = Path(out)
    settings = [
        f"data.name={dataset}",
        f"model.name={model}",
        f"budget.sparsity={sparsity}",
        f"cache_dir={out / 'cache'}",
        *DEMO_TRAIN,
    ]
    if not is_fast(fast, model):
        settings += DEMO_FAITHFUL_SEARCH
    rows = []
    for method in METHODS:
        cfg = load_config(overrides=[*settings, *overrides, f"search.method={method}"], fast=fast)
        run = out / method
        resume = (run / "config.yaml").is_file()
        rows.append(run_search(cfg, run, resume=resume, progress=progress))
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A small Markdown table: test Recall@20, NDCG@20, parameters used / budget, time."""
    lines = [
        "| method | test Recall@20 | test NDCG@20 | params used / budget | seconds |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        b = r["budget"]
        budget = "unbudgeted" if r["method"] == "full" else f"{b['params_budget']:,}"
        seconds = r["pretrain_seconds"] + r["search_seconds"] + r["retrain_seconds"]
        lines.append(
            f"| {r['method']} | {r['test']['recall@20']:.4f} | {r['test']['ndcg@20']:.4f} "
            f"| {b['params_used']:,} / {budget} | {seconds:.0f} |"
        )
    if rows:
        r = rows[0]
        lines.append("")
        lines.append(
            f"{r['dataset']} ({r['protocol']} protocol), {r['model']}, seed {r['seed']}, "
            f"sparsity {rows[-1]['budget']['sparsity']}; test metrics of the model chosen on "
            "validation."
        )
    return "\n".join(lines)
