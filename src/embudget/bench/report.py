"""Results tables, paired t-tests and plots from a grid's ``results.jsonl`` (protocol.md §8–§9).

``embudget report RESULTS_DIR`` renders one Markdown table per (dataset, protocol, backbone):
rows are Full, then method × sparsity; cells are the test mean ± sample std over seeds. BET (and
its variants) is tested against each baseline (SU, SR) at the same sparsity with a paired t-test
over per-user test scores, each user's score first averaged over the shared seeds. With
``plot=True`` it also draws a Pareto plot and a size-versus-popularity plot per table (PNG via
matplotlib, an optional extra imported lazily; without it the report says so and keeps the
tables). Every number comes from ``results.jsonl`` and the run directories; none is typed.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embudget import __version__
from embudget.bench.grid import RESULTS_FILE, load_results
from embudget.bench.stats import paired_ttest
from embudget.errors import ConfigError, RunDirError
from embudget.io import atomic_path, load_npz, write_text

log = logging.getLogger(__name__)

METRICS = ("recall@5", "ndcg@5", "recall@20", "ndcg@20")  # table columns, in order
TESTED = ("recall@20", "ndcg@20")  # metrics with a p-value column (protocol.md §8)
BASELINES = ("su", "sr")
SEARCHES = ("bet", "bet-simple", "bet-random")
ORDER = ("full", *BASELINES, *SEARCHES)
LABELS = {
    "full": "Full",
    "su": "SU",
    "sr": "SR",
    "bet": "BET",
    "bet-simple": "BET-simple",
    "bet-random": "BET-random",
    "recall@5": "Recall@5",
    "ndcg@5": "NDCG@5",
    "recall@20": "Recall@20",
    "ndcg@20": "NDCG@20",
}
_RUN_FIELDS = ("params_used", "fraction_of_full", "search_s")
NO_PLOT_NOTE = (
    "Plots were not drawn: matplotlib is not installed. Install the optional extra "
    "(`pip install 'embudget[plot]'`) and run `embudget report --plot` again."
)


# --------------------------------------------------------------------------------------------
# aggregation
# --------------------------------------------------------------------------------------------
@dataclass
class Run:
    """One finished cell: its metadata and test metrics (``recall@20`` -> value)."""

    run_id: str
    method: str
    sparsity: float | None
    seed: int
    run_dir: str
    params_used: int
    fraction_of_full: float
    search_s: float
    meta: dict[str, Any]
    test: dict[str, float] = field(default_factory=dict)


@dataclass
class Row:
    """One table row: a method at one sparsity (None for Full), its runs by seed."""

    method: str
    sparsity: float | None
    runs: dict[int, Run]

    @property
    def seeds(self) -> list[int]:
        return sorted(self.runs)

    def values(self, key: str) -> np.ndarray:
        """Per-seed values of a test metric or of params_used / fraction_of_full / search_s."""
        out = []
        for s in self.seeds:
            r = self.runs[s]
            # a metric the run did not compute (other eval.ks) is NaN and shows as "–"
            out.append(getattr(r, key) if key in _RUN_FIELDS else r.test.get(key, np.nan))
        return np.asarray(out, dtype=np.float64)

    def mean(self, key: str) -> float:
        return float(self.values(key).mean())

    def std(self, key: str) -> float | None:
        """Sample std (ddof = 1) over seeds; None with a single seed."""
        v = self.values(key)
        return float(v.std(ddof=1)) if v.size > 1 else None


@dataclass
class Comparison:
    """A paired t-test of a search method against one baseline at one sparsity (§8)."""

    sparsity: float
    method: str
    baseline: str
    metric: str
    strongest: bool
    seeds: list[int]
    test: dict[str, float] | None  # paired_ttest output; None when it could not be run
    seed_std: float | None  # the larger seed std of the two rows (None with one seed)
    reason: str = ""

    @property
    def verdict(self) -> str:
        if self.test is None:
            return f"not tested ({self.reason})"
        d, p = self.test["mean_diff"], self.test["p"]
        if not np.isfinite(p):
            return "no difference"
        if self.seed_std is not None and abs(d) < self.seed_std:
            return "inconclusive (difference below seed std)"
        if p >= 0.05:
            return "not significant"
        return "better" if d > 0 else "worse"


@dataclass
class Table:
    """Everything one (dataset, protocol, backbone) table shows."""

    dataset: str
    protocol: str
    backbone: str
    split_seeds: list[int]
    rows: list[Row]
    comparisons: list[Comparison]
    presets: list[str]
    versions: list[str]
    devices: list[str]
    deviations: dict[str, Any]

    @property
    def slug(self) -> str:
        return f"{self.dataset}-{self.protocol}-{self.backbone}"

    def row(self, method: str, sparsity: float | None) -> Row | None:
        return next((r for r in self.rows if r.method == method and r.sparsity == sparsity), None)


def _runs(records: Sequence[dict[str, Any]]) -> tuple[list[Run], list[str]]:
    """Test-split runs; for a cell recorded under several config hashes, the latest wins."""
    notes: list[str] = []
    latest: dict[str, str] = {}  # cell id -> run id of its last record
    for r in records:
        latest[r["cell_id"]] = r["run_id"]
    runs: dict[str, Run] = {}
    stale: set[str] = set()
    for r in records:
        if latest[r["cell_id"]] != r["run_id"]:
            stale.add(r["cell_id"])
            continue
        if r["split"] != "test":
            continue
        run = runs.get(r["run_id"])
        if run is None:
            run = runs[r["run_id"]] = Run(
                run_id=r["run_id"],
                method=r["method"],
                sparsity=None if r["method"] == "full" else r["sparsity"],
                seed=int(r["seed"]),
                run_dir=r["run_dir"],
                params_used=int(r["params_used"]),
                fraction_of_full=float(r["fraction_of_full"]),
                search_s=float(r["time_search_s"]),
                meta=r,
            )
        name = r["metric"] if r["k"] is None else f"{r['metric']}@{r['k']}"
        run.test[name] = float(r["value"])
    if stale:
        notes.append(
            f"{len(stale)} cell(s) were recorded under more than one configuration; "
            "the latest record of each is shown: " + ", ".join(sorted(stale))
        )
    return list(runs.values()), notes


def _seed_averaged(
    results_dir: Path, row: Row, seeds: Sequence[int], metric: str, cache: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """(users, mean over ``seeds`` of each user's test score) for users evaluated in all seeds."""
    users: np.ndarray | None = None
    per_seed = []
    for s in seeds:
        rd = row.runs[s].run_dir
        if rd not in cache:
            path = results_dir / rd / "per_user_test.npz"
            if not path.is_file():
                raise RunDirError(f"{path} is missing; the paired t-test needs per-user scores")
            cache[rd] = load_npz(path)
        z = cache[rd]
        if metric not in z:
            raise RunDirError(f"{results_dir / rd / 'per_user_test.npz'} holds no {metric!r}")
        per_seed.append((z["users"], z[metric]))
        users = z["users"] if users is None else np.intersect1d(users, z["users"])
    assert users is not None
    stacked = [v[np.searchsorted(u, users)] for u, v in per_seed]  # users are ascending
    return users, np.mean(np.stack(stacked).astype(np.float64), axis=0)


def compare(
    results_dir: str | Path, a: Row, b: Row, metric: str, cache: dict[str, Any] | None = None
) -> tuple[dict[str, float], list[int]]:
    """Paired t-test of row ``a`` against row ``b`` on one test metric (protocol.md §8).

    Each user's score is first averaged over the seeds both rows have; the test then runs over
    the users evaluated in every one of those runs. Returns the
    :func:`~embudget.bench.stats.paired_ttest` dict and the seeds used.
    """
    seeds = sorted(set(a.runs) & set(b.runs))
    if not seeds:
        raise ConfigError(
            f"{a.method} and {b.method} share no seed; run both with the same --seeds"
        )
    cache = {} if cache is None else cache
    ua, va = _seed_averaged(Path(results_dir), a, seeds, metric, cache)
    ub, vb = _seed_averaged(Path(results_dir), b, seeds, metric, cache)
    _, x, y = np.intersect1d(ua, ub, return_indices=True)
    return paired_ttest(va[x], vb[y]), seeds


def _table_comparisons(results_dir: Path, rows: list[Row]) -> list[Comparison]:
    out: list[Comparison] = []
    cache: dict[str, Any] = {}
    sparsities = sorted({r.sparsity for r in rows if r.sparsity is not None})
    for sp in sparsities:
        at = {r.method: r for r in rows if r.sparsity == sp}
        bases = [at[m] for m in BASELINES if m in at]
        for metric in METRICS:
            best = max(bases, key=lambda r: r.mean(metric), default=None)
            for m in SEARCHES:
                if m not in at:
                    continue
                for base in bases:
                    stds = [s for s in (at[m].std(metric), base.std(metric)) if s is not None]
                    c = Comparison(
                        sp, m, base.method, metric, base is best, [], None, max(stds, default=None)
                    )
                    try:
                        c.test, c.seeds = compare(results_dir, at[m], base, metric, cache)
                    except (RunDirError, ConfigError) as e:
                        c.reason = str(e)
                        log.warning("no t-test for %s vs %s: %s", m, base.method, e)
                    out.append(c)
    return out


def build_tables(results_dir: str | Path) -> tuple[list[Table], list[str]]:
    """Read ``results.jsonl`` (and per-user scores) into tables; also returns notes."""
    results_dir = Path(results_dir)
    path = results_dir / RESULTS_FILE
    if not path.is_file():
        raise RunDirError(f"{path} does not exist; run `embudget bench --out {results_dir}` first")
    runs, notes = _runs(load_results(path))
    if not runs:
        raise RunDirError(f"{path} holds no finished cell yet")
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for r in runs:
        key = (r.meta["dataset"], r.meta["protocol"], r.meta["backbone"])
        groups.setdefault(key, []).append(r)
    tables = []
    for (dataset, protocol, backbone), group in sorted(groups.items()):
        by_row: dict[tuple[str, float | None], dict[int, Run]] = {}
        for r in group:
            by_row.setdefault((r.method, r.sparsity), {})[r.seed] = r
        rows = [Row(m, sp, rs) for (m, sp), rs in by_row.items()]
        rows.sort(
            key=lambda r: (
                r.method != "full",
                -1.0 if r.sparsity is None else r.sparsity,
                ORDER.index(r.method) if r.method in ORDER else len(ORDER),
            )
        )
        tables.append(
            Table(
                dataset=dataset,
                protocol=protocol,
                backbone=backbone,
                split_seeds=sorted({int(r.meta["split_seed"]) for r in group}),
                rows=rows,
                comparisons=_table_comparisons(results_dir, rows),
                presets=sorted({str(r.meta["preset"]) for r in group}),
                versions=sorted({str(r.meta["embudget_version"]) for r in group}),
                devices=sorted({str(r.meta["device"]) for r in group}),
                deviations=_deviations(results_dir, group),
            )
        )
    return tables, notes


def _deviations(results_dir: Path, runs: Sequence[Run]) -> dict[str, Any]:
    """Union of the non-faithful settings of the runs' resolved configs (bet.md §14.7); a
    setting whose value differs between runs lists every value, ``a | b`` (``default`` for runs
    that keep the faithful value)."""
    from embudget.bench.grid import deviations
    from embudget.config import load_config

    per_run = []
    for r in runs:
        path = results_dir / r.run_dir / "config.yaml"
        if path.is_file():
            per_run.append(deviations(load_config([path])))
    seen: dict[str, list[Any]] = {}
    for dev in per_run:
        for k, v in dev.items():
            if v not in seen.setdefault(k, []):
                seen[k].append(v)
    for k, vs in seen.items():
        if any(k not in dev for dev in per_run):
            vs.append("default")
    return {k: vs[0] if len(vs) == 1 else " | ".join(map(str, vs)) for k, vs in seen.items()}


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------
def _hmm(seconds: float) -> str:
    minutes = int(round(seconds / 60.0))
    return f"{minutes // 60}:{minutes % 60:02d}"


def _cell(row: Row, key: str) -> str:
    mean, std = row.mean(key), row.std(key)
    if not np.isfinite(mean):
        return "–"
    return f"{mean:.4f} (n=1)" if std is None else f"{mean:.4f} ± {std:.4f}"


def _p(c: Comparison | None) -> str:
    if c is None or c.test is None:
        return "–"
    p = c.test["p"]
    return "nan" if not np.isfinite(p) else f"{p:.2g}"


def render_table(table: Table) -> str:
    """The Markdown table, its footnote and the significance detail of one table."""
    head = ["Sparsity", "Method", *(LABELS[m] for m in METRICS)]
    head += ["Params used", "Fraction of full", "Search cost (h:mm)"]
    head += ["p vs best baseline (R@20 / N@20)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    best: dict[tuple[float | None, str], float] = {}
    for r in table.rows:
        if r.method == "full":
            continue
        for m in METRICS:
            best[(r.sparsity, m)] = max(best.get((r.sparsity, m), -np.inf), r.mean(m))
    for r in table.rows:
        cells = ["—" if r.sparsity is None else f"{r.sparsity:g}", LABELS.get(r.method, r.method)]
        for m in METRICS:
            text = _cell(r, m)
            if r.method != "full" and r.mean(m) == best[(r.sparsity, m)]:
                text = f"**{text}**"
            if r.method in SEARCHES and r.sparsity is not None and np.isfinite(r.mean(m)):
                c = _strongest_for(table, r, m)
                if c is not None and c.test is not None and c.test["p"] < 0.05:
                    text += " †"
            cells.append(text)
        cells.append(f"{r.mean('params_used'):,.0f}")
        cells.append(f"{r.mean('fraction_of_full'):.4f}")
        cells.append(_hmm(r.mean("search_s")))
        if r.method in SEARCHES and r.sparsity is not None:
            cs = [_strongest_for(table, r, m) for m in TESTED]
            names = {c.baseline for c in cs if c is not None}
            cells.append(
                " / ".join(_p(c) for c in cs)
                + (f" ({', '.join(LABELS[n] for n in sorted(names))})" if names else "")
            )
        else:
            cells.append("")
        lines.append("| " + " | ".join(cells) + " |")
    seeds = sorted({s for r in table.rows for s in r.seeds})
    dev = ", ".join(f"{k}={v}" for k, v in sorted(table.deviations.items()))
    foot = (
        f"Dataset {table.dataset}, protocol {table.protocol}, split seed "
        f"{', '.join(map(str, table.split_seeds))}, training seeds {', '.join(map(str, seeds))}, "
        f"preset {', '.join(table.presets)}"
        + (f" (settings differing from the faithful defaults: {dev})" if dev else "")
        + f", embudget {', '.join(table.versions)}, device {', '.join(table.devices)}. "
        "Test split; mean ± sample std (ddof = 1) over seeds, `(n=1)` for a single seed. "
        "Bold: the best budgeted method at that sparsity. p: two-sided paired t-test over users "
        "against the strongest baseline (SU or SR, highest mean at that sparsity), each user's "
        "score first averaged over the shared seeds; † marks p < 0.05. p-values are not "
        "corrected for multiple comparisons. Search cost: wall-clock time of the search phase "
        "(probes and predictor); retraining and pretraining times are in results.jsonl."
    )
    out = [f"### {table.dataset} ({table.protocol}), {table.backbone}", "", *lines, "", foot]
    sig = render_significance(table)
    if sig:
        out += ["", sig]
    return "\n".join(out) + "\n"


def _strongest_for(table: Table, row: Row, metric: str) -> Comparison | None:
    return next(
        (
            c
            for c in table.comparisons
            if c.sparsity == row.sparsity
            and c.method == row.method
            and c.metric == metric
            and c.strongest
        ),
        None,
    )


def render_significance(table: Table) -> str:
    """Effect sizes behind the p-values: every search method against every baseline."""
    rows = [c for c in table.comparisons if c.metric in TESTED]
    if not rows:
        return ""
    head = "| Sparsity | Method | Metric | Baseline | Mean diff | 95% CI | t | p | n users | "
    head += "Seeds | Seed std | Verdict |"
    lines = [head, "|" + "---|" * 12]
    for c in rows:
        base = LABELS[c.baseline] + (" (strongest)" if c.strongest else "")
        std = "–" if c.seed_std is None else f"{c.seed_std:.4f}"
        if c.test is None:
            stats = ["–"] * 5
        else:
            t = c.test
            stats = [
                f"{t['mean_diff']:+.4f}",
                f"[{t['ci_low']:+.4f}, {t['ci_high']:+.4f}]",
                f"{t['t']:.2f}",
                _p(c),
                f"{int(t['n']):,}",
            ]
        cells = [f"{c.sparsity:g}", LABELS.get(c.method, c.method), LABELS[c.metric], base]
        cells += [*stats, ",".join(map(str, c.seeds)) or "–", std, c.verdict]
        lines.append("| " + " | ".join(cells) + " |")
    return (
        "Paired t-tests (test split, per-user scores averaged over seeds; a difference smaller "
        "than the seed-to-seed std is called inconclusive whatever its p-value):\n\n"
        + "\n".join(lines)
    )


# --------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------
def _figure_class() -> Any | None:
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


def _write_pareto(table: Table, fig_dir: Path, Figure: Any) -> tuple[Path, Path]:
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


def _write_sizes(table: Table, results_dir: Path, fig_dir: Path, Figure: Any) -> Path | None:
    """Assigned size against training-popularity rank, users and items (first seed per row)."""
    from embudget.config import load_config
    from embudget.pipeline.experiment import load_data

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
    ds = load_data(load_config([cfg_path]))
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


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------
@dataclass
class Report:
    """What :func:`write_report` wrote."""

    path: Path
    tables: list[Table]
    figures: list[Path]
    notes: list[str]


def write_report(
    results_dir: str | Path, out: str | Path | None = None, *, plot: bool = False
) -> Report:
    """Write the Markdown report (and, with ``plot``, the PNGs and CSVs beside it).

    Args:
        results_dir: a directory written by ``embudget bench`` (``results.jsonl`` + ``runs/``).
        out: the Markdown file; ``RESULTS_DIR/report.md`` by default. Figures go to a
            ``figures/`` folder next to it.
        plot: draw the Pareto and size-vs-popularity plots (needs matplotlib; without it the
            report holds the tables and a note saying so).
    """
    results_dir = Path(results_dir)
    out = results_dir / "report.md" if out is None else Path(out)
    tables, notes = build_tables(results_dir)
    figures: list[Path] = []
    Figure = _figure_class() if plot else None
    if plot and Figure is None:
        notes.append(NO_PLOT_NOTE)
        log.warning("matplotlib is not installed: the report holds the tables only")
    parts = [
        "# embudget results",
        "",
        f"Generated by `embudget report` (embudget {__version__}) from "
        f"`{results_dir / RESULTS_FILE}`; every number below is computed from that file and the "
        "run directories it names.",
        "",
    ]
    parts += [f"> **Note.** {n}\n" for n in notes]
    fig_dir = out.parent / "figures"
    for t in tables:
        parts.append(render_table(t))
        if Figure is not None:
            fig_dir.mkdir(parents=True, exist_ok=True)
            png, csv_path = _write_pareto(t, fig_dir, Figure)
            figures += [png, csv_path]
            parts.append(
                f"![Pareto plot]({png.relative_to(out.parent)}) "
                f"(data: [{csv_path.name}]({csv_path.relative_to(out.parent)}))\n"
            )
            sizes = _write_sizes(t, results_dir, fig_dir, Figure)
            if sizes is not None:
                figures.append(sizes)
                parts.append(f"![Size vs popularity]({sizes.relative_to(out.parent)})\n")
    write_text(out, "\n".join(parts))
    log.info("report written to %s (%d tables, %d figures)", out, len(tables), len(figures))
    return Report(out, tables, figures, notes)
