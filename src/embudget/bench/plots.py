"""The report's plots: accuracy against parameters (Pareto) and assigned size against
popularity, per table (matplotlib's ``Figure``, no pyplot; matplotlib is an optional extra).
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from embudget.bench.aggregate import LABELS, ORDER, TESTED, Table
from embudget.io import atomic_path, load_npz, write_text

log = logging.getLogger(__name__)


def figure_class() -> Any | None:
    """matplotlib's Figure (no pyplot, no global backend state), or None when not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure


def pareto_points(table: Table, metric: str) -> list[dict[str, Any]]:
    """The points of the Pareto plot (budgeted rows), with the non-dominated ones flagged.

    A point is dominated when another uses no more parameters and scores at least as well,
    strictly better in one of the two.
    """
    pts = [
        {
            "method": r.method,
            "sparsity": r.sparsity,
            "metric": metric,
            "params_used": r.mean("params_used"),
            "mean": r.mean(metric),
            "std": r.std(metric) or 0.0,
            "n_seeds": len(r.seeds),
        }
        for r in table.rows
        if r.method != "full" and np.isfinite(r.mean(metric))
    ]
    x = np.array([p["params_used"] for p in pts])
    y = np.array([p["mean"] for p in pts])
    if len(pts):
        le = x[None, :] <= x[:, None]
        ge = y[None, :] >= y[:, None]
        strict = (x[None, :] < x[:, None]) | (y[None, :] > y[:, None])
        dominated = np.asarray((le & ge & strict).any(axis=1)).tolist()
        for p, d in zip(pts, dominated, strict=True):
            p["pareto"] = not bool(d)
    return pts


def write_pareto(table: Table, fig_dir: Path, Figure: Any) -> tuple[Path, Path]:
    panels = TESTED
    rows = [p for m in panels for p in pareto_points(table, m)]
    buf = io.StringIO()
    fields = ["method", "sparsity", "metric", "params_used", "mean", "std", "n_seeds", "pareto"]
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    csv_path = fig_dir / f"{table.slug}-pareto.csv"
    write_text(csv_path, buf.getvalue())

    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, len(panels))
    full = table.row("full", None)
    for ax, metric in zip(axes, panels, strict=True):
        pts = pareto_points(table, metric)
        for method in ORDER[1:]:
            mp = sorted((p for p in pts if p["method"] == method), key=lambda p: p["params_used"])
            if not mp:
                continue
            ax.errorbar(
                [p["params_used"] for p in mp],
                [p["mean"] for p in mp],
                yerr=[p["std"] for p in mp],
                marker="o",
                capsize=3,
                label=LABELS[method],
            )
        front = [p for p in pts if p.get("pareto")]
        ax.scatter(
            [p["params_used"] for p in front],
            [p["mean"] for p in front],
            s=140,
            facecolors="none",
            edgecolors="black",
            label="non-dominated",
            zorder=3,
        )
        if full is not None:
            ax.axhline(full.mean(metric), color="gray", linestyle="--", label="Full (d_max)")
        ax.set_xscale("log")
        ax.set_xlabel("embedding parameters used")
        ax.set_ylabel(f"test {LABELS[metric]}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle(f"{table.dataset} ({table.protocol}), {table.backbone}: accuracy vs parameters")
    fig.tight_layout()
    png = fig_dir / f"{table.slug}-pareto.png"
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    return png, csv_path


def write_sizes(table: Table, results_dir: Path, fig_dir: Path, Figure: Any) -> Path | None:
    """Assigned size against training-popularity rank, users and items (first seed per row)."""
    from embudget.config import load_config

    try:  # the popularity ranks come from the dataset, whose loading needs torch
        from embudget.pipeline.build import load_data
    except ImportError as e:
        log.warning("size-vs-popularity plot skipped: the dataset cannot be loaded (%s)", e)
        return None
    rows = [r for r in table.rows if r.method != "full"]
    picks = []
    for r in rows:
        run = r.runs[r.seeds[0]]
        path = results_dir / run.run_dir / "sizes.npz"
        if path.is_file():
            picks.append((r, run, load_npz(path)))
    if not picks:
        return None
    cfg_path = results_dir / picks[0][1].run_dir / "config.yaml"
    ds = load_data(load_config([cfg_path], fast=False))
    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2)
    styles = ["-", "--", ":", "-."]
    sparsities = sorted({r.sparsity for r, _, _ in picks if r.sparsity is not None})
    colors = {m: f"C{i}" for i, m in enumerate(ORDER[1:])}
    for ax, who, freq in ((axes[0], "user", ds.user_freq), (axes[1], "item", ds.item_freq)):
        order = np.argsort(-np.asarray(freq), kind="stable")  # rank 0 = most popular
        ranks = np.arange(1, order.size + 1)
        for r, _, z in picks:
            sizes = z[f"{who}_sizes"]
            if sizes.size != order.size:
                log.warning("%s sizes do not match the dataset; skipped", r.method)
                continue
            label = f"{LABELS.get(r.method, r.method)} s={r.sparsity:g}"
            ls = styles[sparsities.index(r.sparsity) % len(styles)] if r.sparsity else "-"
            kw: dict[str, Any] = {"color": colors.get(r.method, "k"), "label": label}
            if r.method == "sr":  # random sizes: a cloud, not a curve
                ax.scatter(ranks, sizes[order], s=1, alpha=0.2, **kw)
            else:
                ax.plot(ranks, sizes[order], linestyle=ls, **kw)
        ax.set_xscale("log")
        ax.set_xlabel(f"{who} popularity rank (1 = most training interactions)")
        ax.set_ylabel("assigned embedding size")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize="x-small", markerscale=5)
    fig.suptitle(f"{table.dataset} ({table.protocol}), {table.backbone}: size vs popularity")
    fig.tight_layout()
    png = fig_dir / f"{table.slug}-sizes.png"
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    return png
