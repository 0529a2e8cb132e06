"""The report's numbers: a grid's ``results.jsonl`` grouped into tables of rows (a method at a
sparsity, its runs by seed), and the paired t-tests of each search method against each baseline
(protocol.md §8). No torch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embudget.bench.cells import BASELINES, METHODS, SEARCHES, deviations, procedure
from embudget.bench.records import RESULTS_FILE, load_results, recorded_settings, run_config
from embudget.bench.stats import mean_per_user, paired_ttest
from embudget.errors import ConfigError, ResultError, RunDirError
from embudget.io import load_npz

log = logging.getLogger(__name__)

METRICS = ("recall@5", "ndcg@5", "recall@20", "ndcg@20")  # table columns, in order
TESTED = ("recall@20", "ndcg@20")  # metrics with a p-value column (protocol.md §8)
ORDER = METHODS  # the row order of a table
#: display names of the methods and metrics (a test checks that every method has one)
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
    #: how the fits ended (:func:`_fits`); empty when no run recorded it
    fits: str = ""

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
    return mean_per_user(per_seed)


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


def _grouped(runs: Sequence[Run]) -> dict[tuple[str, str, str], list[Run]]:
    """The runs of each (dataset, protocol, backbone), one table each."""
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for r in runs:
        key = (r.meta["dataset"], r.meta["protocol"], r.meta["backbone"])
        groups.setdefault(key, []).append(r)
    return groups


def _about(group: Sequence[Run], changes: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    """What a table's caption lists: split seeds, procedures (:func:`cells.procedure`, else the
    recorded ``preset``), versions and devices of its runs."""
    procedures = set()
    for r in group:
        dev = changes[r.run_id]
        procedures.add(str(r.meta["preset"]) if dev is None else procedure(dev))
    return {
        "split_seeds": sorted({int(r.meta["split_seed"]) for r in group}),
        "presets": sorted(procedures),
        "versions": sorted({str(r.meta["embudget_version"]) for r in group}),
        "devices": sorted({str(r.meta["device"]) for r in group}),
        "fits": _fits(group),
    }


def fit_ends(runs: Sequence[Run]) -> tuple[list[str], int]:
    """The fits among ``runs`` that the step cap ended rather than early stopping (short of
    convergence), as labels (``Θ0``, ``SU 80 %``), and how many runs did not record it."""
    capped: set[str] = set()
    unknown = 0
    for r in runs:
        kept, theta0 = r.meta.get("stopped_early"), r.meta.get("theta0_stopped_early")
        if kept is None:
            unknown += 1
        elif not kept:  # the full-size run keeps Θ0 itself
            label = "Θ0" if r.sparsity is None else LABELS.get(r.method, r.method)
            capped.add(label if r.sparsity is None else f"{label} {r.sparsity * 100:g} %")
        if theta0 is False:
            capped.add("Θ0")
    return sorted(capped), unknown


def _fits(group: Sequence[Run]) -> str:
    """How a table's fits ended, for its footnote; empty when no run recorded it."""
    capped, unknown = fit_ends(group)
    if unknown == len(group):
        return ""
    tail = f"; not recorded for {unknown} of {len(group)} runs" if unknown else ""
    if not capped:
        return f"Every fit stopped early{tail}."
    return f"Ended by the step cap, not early stopping: {', '.join(capped)}{tail}."


def run_changes(results_dir: Path, runs: Sequence[Run]) -> dict[str, dict[str, Any] | None]:
    """run id -> its settings that differ from the faithful defaults (:func:`cells.deviations`)
    of the config :func:`records.run_config` recovers; None where it recovers none."""
    recorded = recorded_settings(results_dir)
    out: dict[str, dict[str, Any] | None] = {}
    for r in runs:
        cfg = run_config(results_dir, r.meta, recorded)
        out[r.run_id] = None if cfg is None else deviations(cfg)
    return out


def build_tables(results_dir: str | Path) -> tuple[list[Table], list[str]]:
    """Read ``results.jsonl`` (and per-user scores) into tables; also returns notes.

    Raises:
        RunDirError: there is no finished cell to report.
        ResultError: a record is not one of this schema version, or lacks or mistypes a field.
    """
    results_dir = Path(results_dir)
    path = results_dir / RESULTS_FILE
    if not path.is_file():
        raise RunDirError(f"{path} does not exist; run `embudget bench --out {results_dir}` first")
    try:  # every field of the records is read here, so a malformed one is a ResultError
        runs, notes = _runs(load_results(path))
        groups = _grouped(runs)
        changes = run_changes(results_dir, runs)
        about = {key: _about(group, changes) for key, group in groups.items()}
    except KeyError as e:
        raise ResultError(f"{path}: a record lacks the field {e}") from None
    except (TypeError, ValueError) as e:
        raise ResultError(f"{path}: a record has a field of the wrong type ({e})") from None
    if not runs:
        raise RunDirError(f"{path} holds no finished cell yet")
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
                rows=rows,
                comparisons=_table_comparisons(results_dir, rows),
                deviations=_union(changes[r.run_id] for r in group),
                **about[(dataset, protocol, backbone)],
            )
        )
    return tables, notes


def table_deviations(results_dir: Path, runs: Sequence[Run]) -> dict[str, Any]:
    """Union of the non-faithful settings of the runs (:func:`run_changes`; bet.md §14.7); a
    setting whose value differs between runs lists every value, ``a | b`` (``default`` for runs
    that keep the faithful value)."""
    return _union(run_changes(results_dir, runs).values())


def _union(changes: Iterable[dict[str, Any] | None]) -> dict[str, Any]:
    per_run = [dev for dev in changes if dev is not None]
    seen: dict[str, list[Any]] = {}
    for dev in per_run:
        for k, v in dev.items():
            if v not in seen.setdefault(k, []):
                seen[k].append(v)
    for k, vs in seen.items():
        if any(k not in dev for dev in per_run):
            vs.append("default")
    return {k: vs[0] if len(vs) == 1 else " | ".join(map(str, vs)) for k, vs in seen.items()}
