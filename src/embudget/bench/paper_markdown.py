"""The Markdown of ``embudget report --paper``: one row per Table 1 cell and procedure, our
figures beside the paper's (:mod:`embudget.bench.paper_table`), the settings that reduce them
in words, and the footnote that says where every number comes from. No torch."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embudget.bench import paper_table
from embudget.bench.aggregate import Row, Run, compare, fit_ends
from embudget.bench.cells import procedure
from embudget.config import FAST_BY_DEFAULT, RunConfig
from embudget.errors import ConfigError, RunDirError

TESTED = ("recall@20", "ndcg@20")
#: bet.md's defaults (the schema's), which every described setting is compared with
BET_DEFAULTS = RunConfig().flat()


@dataclass
class PaperRow:
    """One table row: a Table 1 cell run with one procedure, its runs by seed."""

    dataset: str
    protocol: str
    backbone: str
    sparsity: float
    method: str
    settings: dict[str, Any] | None  # differences from bet.md's defaults; None: not recorded
    row: Row  # each run's run_dir is its path (results folder / run_dir)
    folders: list[str] = field(default_factory=list)
    devices: set[str] = field(default_factory=set)
    su: PaperRow | None = None  # a search's SU row trained the same way, when there is one

    @property
    def cell(self) -> tuple[str, str, float, str]:
        return (self.dataset, self.backbone, self.sparsity, self.method)

    def mean(self, metric: str, seeds: Iterable[int] | None = None) -> float:
        use = self.row.seeds if seeds is None else sorted(seeds)
        return float(np.mean([self.row.runs[s].test.get(metric, np.nan) for s in use]))


def mode(settings: dict[str, Any] | None) -> str:
    """``faithful`` (bet.md's procedure, possibly cut down) or ``fast`` (bet.md §14.7)."""
    if settings is None:
        return "not recorded"
    return procedure(settings)


#: settings in words, in the order they are listed: {v} the value, {d} bet.md's, {p} a percentage,
#: {s} a plural "s" unless the value is 1
_PHRASES: dict[str, str] = {
    "train.max_steps": "{v:,}-step cap",
    "search.retrain.max_steps": "retraining ≤ {v:,} steps",
    "search.iterations": "T {v} ({d})",
    "search.probe.epochs": "h {v} epoch{s} (10)",
    "search.retrain.top": "top-{v} retrained ({d})",
    "search.probe.user_fraction": "fitness on {p} of users",
    "search.pretrain.mode": "{v} Θ0",
    "search.probe.steps": "{v}-step probes",
    "search.probe.small_data_users": "every user, longer probes under {v:,} fitness users",
    "search.predictor.update_mode": "{v} predictor",
    "search.retrain.init": "{v} retraining",
    "search.retrain.validate_first": "validated start",
    "train.eval_every_steps": "validation every {v:,} steps ({d:,})",
    "train.eval_every_epochs": "validation ≤ {v} epochs apart",
    "train.min_delta": "patience reset only by gains > {v} in Q",
    "train.eval_user_fraction": "selection on {p} of users",
    "train.lr": "lr {v} ({d})",
}
#: settings that go without saying once another one is listed
_IMPLIED = {
    "search.predictor.updates": "search.predictor.update_mode",
    "search.predictor.output": "search.predictor.update_mode",
    "search.probe.small_data_steps": "search.probe.small_data_users",
}
_VALUES = {"shared": "warm", "batch": "batch-fitted"}


def describe(settings: dict[str, Any] | None) -> str:
    """``mode: settings that differ from bet.md's``, the training caps first."""
    if settings is None:
        return "settings not recorded"
    rest = {k: v for k, v in settings.items() if _IMPLIED.get(k) not in settings}
    if rest.get("search.probe.lr") == rest.get("train.lr"):
        rest.pop("search.probe.lr", None)  # a backbone's learning rate, for probes too
    parts = []
    for key in [*(k for k in _PHRASES if k in rest), *sorted(k for k in rest if k not in _PHRASES)]:
        value = rest[key]
        template = _PHRASES.get(key, key + " {v} ({d})")
        pct = f"{100 * float(value):g} %" if "{p}" in template else ""
        plural = "" if value == 1 else "s"
        parts.append(
            template.format(v=_VALUES.get(str(value), value), d=BET_DEFAULTS[key], p=pct, s=plural)
        )
    head = mode(settings)
    return f"{head}: {', '.join(parts)}" if parts else f"{head}, as bet.md"


def _paper(cell: tuple[str, str, float, str], metric: str) -> tuple[float | None, str]:
    """The paper's figure for a cell and its source key (None, "" where none is listed)."""
    fig = paper_table.FIGURES.get(cell)
    if fig is None or metric not in fig:
        return None, ""
    return float(fig[metric]), str(fig["source"])


def _paper_ratio(row: PaperRow) -> tuple[float | None, str]:
    """The paper's BET / SU on Recall@20: from its two figures, else the quoted ratio."""
    bet, bet_src = _paper(row.cell, "recall@20")
    su, su_src = _paper((row.dataset, row.backbone, row.sparsity, "su"), "recall@20")
    if bet is not None and su is not None:
        return bet / su, "quoted" if "quoted" in (bet_src, su_src) else "spec"
    quoted = paper_table.BET_OVER_SU.get((row.dataset, row.backbone, row.sparsity))
    if quoted is None:
        return None, ""
    return float(quoted["recall@20"]), str(quoted["source"])


def _mark(text: str, source: str) -> str:
    return f"{text} ‡" if source == "quoted" else text


def _vs_paper(row: PaperRow, metric: str) -> list[str]:
    """Ours (mean ± std over seeds), the paper's figure, ours / paper."""
    mean, std = row.row.mean(metric), row.row.std(metric)
    ours = (
        "–" if not np.isfinite(mean) else f"{mean:.4f}" + ("" if std is None else f" ± {std:.4f}")
    )
    paper, source = _paper(row.cell, metric)
    if paper is None:
        return [ours, "–", "–"]
    return [ours, _mark(f"{paper:.4f}", source), f"{mean / paper:.2f}"]


def _against_su(row: PaperRow) -> list[str]:
    """BET / SU here and in the paper, and the paired p-values against the row's SU."""
    if row.method in ("su", "sr"):
        return ["", "", ""]
    paper, source = _paper_ratio(row)
    paper_text = "–" if paper is None else _mark(f"{paper:.2f}", source)
    su = row.su
    if su is None:
        return ["–", paper_text, "–"]
    shared = sorted(set(row.row.runs) & set(su.row.runs))
    ratio = row.mean("recall@20", shared or None) / su.mean("recall@20", shared or None)
    ps = []
    for metric in TESTED:
        try:
            test, _ = compare(Path("."), row.row, su.row, metric)
        except (RunDirError, ConfigError):  # per-user scores not at hand, or no shared seed
            ps.append("–")
            continue
        ps.append(f"{test['p']:.2g}" if np.isfinite(test["p"]) else "nan")
    p_text = "–" if set(ps) == {"–"} else " / ".join(ps)
    return [f"{ratio:.2f}" + ("" if shared else " *"), paper_text, p_text]


def _pct(sparsity: float) -> str:
    return f"{100 * sparsity:g} %"


def not_run(rows: Sequence[PaperRow]) -> str:
    """The cells of the paper's Table 1 that no row covers, by dataset and backbone."""
    grid = paper_table.GRID
    ran = {r.cell for r in rows}
    parts = []
    for d in grid["datasets"]:
        for b in grid["backbones"]:
            missing = [
                f"{m.upper()} {_pct(sp)}"
                for sp in grid["sparsities"]
                for m in grid["methods"]
                if (d, b, sp, m) not in ran
            ]
            if len(missing) == len(grid["sparsities"]) * len(grid["methods"]):
                parts.append(f"{d} {b} (all {len(missing)} cells)")
            elif missing:
                parts.append(f"{d} {b} ({', '.join(missing)})")
    return "; ".join(parts)


HEAD = (
    "Dataset",
    "Backbone",
    "Sparsity",
    "Method",
    "Procedure: settings that differ from bet.md's (bet.md's value)",
    "Seeds",
    "R@20 ours",
    "R@20 paper",
    "ours / paper (R@20)",
    "N@20 ours",
    "N@20 paper",
    "ours / paper (N@20)",
    "BET / SU ours (R@20)",
    "BET / SU paper",
    "p vs SU (R@20 / N@20)",
    "Results",
)


def _fit_note(runs: Sequence[Run]) -> str:
    """Whether the row's fits ran to early stopping, where its runs recorded it."""
    capped, unknown = fit_ends(runs)
    if unknown == len(runs):
        return ""
    if capped:
        return "; the step cap ended " + ", ".join(capped)
    return "; every fit to early stopping" + (f" ({unknown} not recorded)" if unknown else "")


def _converged(row: PaperRow) -> bool:
    """Every fit of every run (Θ0 included) ended by early stopping, as the runs recorded."""
    capped, unknown = fit_ends(list(row.row.runs.values()))
    return not capped and unknown == 0


def headline(rows: Sequence[PaperRow]) -> list[PaperRow]:
    """One BET row per cell of the paper's Table 1, chosen without looking at its figures: the
    row whose fits all reached early stopping first, then the one with the most seeds, then the
    backbone's default procedure (``FAST_BY_DEFAULT``), then the one closest to bet.md (fewest
    changed settings); rows with an SU row trained the same way before those without."""
    best: dict[tuple[str, str, str, float], PaperRow] = {}

    def rank(r: PaperRow) -> tuple[bool, bool, int, bool, bool, int]:
        default = "fast" if r.backbone in FAST_BY_DEFAULT else "faithful"
        return (
            r.su is not None,
            _converged(r),
            len(r.row.seeds),
            mode(r.settings) == default,
            r.settings is not None,
            -len(r.settings or {}),
        )

    for r in rows:  # rows come sorted, so the first of equal rank is kept
        if r.method != "bet":
            continue
        key = (r.dataset, r.protocol, r.backbone, r.sparsity)
        if key not in best or rank(r) > rank(best[key]):
            best[key] = r
    return list(best.values())


HEADLINE_HEAD = (
    "Dataset",
    "Backbone",
    "Sparsity",
    "Seeds",
    "SU R@20 / N@20",
    "BET R@20 / N@20",
    "BET R@20 ours / paper",
    "BET / SU ours (R@20)",
    "BET / SU paper",
    "p vs SU (R@20 / N@20)",
    "BET's procedure",
)


def _short(row: PaperRow) -> str:
    """The procedure in a few words: its mode and how its fits ended."""
    settings = row.settings or {}
    capped, _ = fit_ends(list(row.row.runs.values()))
    if _converged(row):
        how = "every fit to early stopping"
    elif "train.max_steps" in settings:
        how = f"{settings['train.max_steps']:,}-step cap"
    elif capped:
        how = "the step cap ended " + ", ".join(capped)
    else:
        how = "fits' ends not recorded"
    return f"{mode(row.settings)}, {how}"


def against_su(rows: Sequence[PaperRow]) -> dict[int, list[str]]:
    """Each row's BET / SU here and in the paper and its p-values (:func:`_against_su`), by
    ``id(row)``: computed once (the paired tests read per-user scores) for both tables."""
    return {id(r): _against_su(r) for r in rows}


def render_headline(rows: Sequence[PaperRow], vs_su: Mapping[int, list[str]]) -> str:
    """The summary table: per cell, BET (:func:`headline`'s row) beside its SU and the paper;
    ``vs_su`` from :func:`against_su`."""
    chosen = headline(rows)
    lines = ["| " + " | ".join(HEADLINE_HEAD) + " |", "|" + "---|" * len(HEADLINE_HEAD)]
    for r in chosen:
        su = "–" if r.su is None else " / ".join(f"{r.su.mean(m):.4f}" for m in TESTED)
        bet = " / ".join(f"{r.mean(m):.4f}" for m in TESTED)
        paper, source = _paper(r.cell, "recall@20")
        vs_paper = "–" if paper is None else _mark(f"{r.mean('recall@20') / paper:.2f}", source)
        seeds = ", ".join(map(str, r.row.seeds))
        cells = [r.dataset, r.backbone, _pct(r.sparsity), seeds, su, bet, vs_paper]
        lines.append("| " + " | ".join([*cells, *vs_su[id(r)], _short(r)]) + " |")
    foot = (
        "One BET row per cell, chosen by how it was run, never by its figures: every fit to "
        "early stopping first, then the most seeds, then the backbone's default procedure "
        "(fast for LightGCN, NGCF and MF, faithful for NCF), then the fewest changes from "
        "bet.md. SU is the row trained as BET's tables were (its mean over its seeds); the "
        "ratios and p-values are those of the full table below, where every procedure of "
        "every cell has its row."
    )
    return "\n".join(lines) + "\n\n" + foot + "\n"


def render(rows: Sequence[PaperRow], n_files: int, vs_su: Mapping[int, list[str]]) -> str:
    """The Markdown table and its footnote; ``vs_su`` from :func:`against_su`."""
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    for r in rows:
        where = ", ".join(f"`{f}`" for f in r.folders)
        if any(d.startswith("cuda") for d in r.devices):
            where += " (GPU)"
        how = describe(r.settings) + _fit_note(list(r.row.runs.values()))
        cells = [r.dataset, r.backbone, _pct(r.sparsity), r.method.upper(), how]
        cells.append(", ".join(map(str, r.row.seeds)))
        cells += _vs_paper(r, "recall@20") + _vs_paper(r, "ndcg@20") + vs_su[id(r)] + [where]
        lines.append("| " + " | ".join(cells) + " |")
    foot = [
        "Ours: test split of protocol P (protocol.md §3), every user evaluated; mean ± sample "
        "std (ddof = 1) over the seeds listed, no ± for one seed; read from "
        f"{n_files} results file(s). The rows of one cell differ in procedure: each lists every "
        "setting that differs from bet.md's (bet.md's value in brackets), i.e. the reductions "
        "that apply to its figures. faithful: bet.md's search, possibly cut down; fast: fast "
        "mode (bet.md §14.7). Caps are on training steps (Θ0, SU, SR and retraining alike); "
        "where the runs recorded how their fits ended, the procedure also says whether every "
        "fit reached early stopping or which ones the step cap ended; "
        "fitness and selection fractions are fixed samples of the validation users; test "
        "metrics always use every user.",
        f"Paper: {paper_table.CITATION}. Figures from {paper_table.SOURCES['spec']}; ‡: from "
        f"{paper_table.SOURCES['quoted']}. –: no figure with a named source (never estimated).",
        "BET / SU ours: BET's Recall@20 over that of the SU row trained the same way (same cell "
        "and training settings), over the seeds both have (*: none shared, every seed of "
        "each). p: two-sided paired t-test over users against that SU row (protocol.md §8), "
        "each user's score averaged over the shared seeds; – where the per-user scores are "
        "not at hand (run directories are not committed).",
    ]
    missing = not_run(rows)
    if missing:
        foot.append(f"Cells of the paper's Table 1 not run: {missing}.")
    return "\n".join(lines) + "\n\n" + "\n\n".join(foot) + "\n"
