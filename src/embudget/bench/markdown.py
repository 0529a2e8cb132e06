"""The report's Markdown: one results table per (dataset, protocol, backbone) with its footnote,
and the effect sizes behind its p-values."""

from __future__ import annotations

import numpy as np

from embudget.bench.aggregate import LABELS, METRICS, SEARCHES, TESTED, Comparison, Row, Table


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
        + (f"{table.fits} " if table.fits else "")
        + "Test split; mean ± sample std (ddof = 1) over seeds, `(n=1)` for a single seed. "
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
