"""The report: tables hold the numbers of results.jsonl, p-values match scipy on seed-averaged
per-user scores, plots with matplotlib and a clear note without it."""

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.stats

from embudget.bench import grid, report
from embudget.budget.usage import Usage
from embudget.cli import main
from embudget.errors import RunDirError
from embudget.io import save_npz
from embudget.result import Metrics, RunResult, Timing

SHOWN = ("recall@5", "ndcg@5", "recall@20", "ndcg@20")
METRICS = (*SHOWN, "quality")
N_USERS = 120
# per-user score level of each (method, sparsity): SR is the strongest baseline at 0.8, SU at 0.9
LEVEL = {
    ("full", None): 0.20,
    ("su", 0.8): 0.100,
    ("sr", 0.8): 0.110,
    ("bet", 0.8): 0.125,
    ("su", 0.9): 0.090,
    ("sr", 0.9): 0.080,
    ("bet", 0.9): 0.092,
}


def _write_cell(out: Path, cell: grid.Cell, per_user: dict[str, np.ndarray], users: np.ndarray):
    """A finished cell as bench writes it: per_user_test.npz plus its results.jsonl lines."""
    run_dir = Path("runs") / f"{cell.cell_id}-{abs(hash(cell)) % 10**8:08d}"
    save_npz(out / run_dir / "per_user_test.npz", users=users, **per_user)
    test = {m: float(v.mean()) for m, v in per_user.items()}
    full = 2000 * 16
    used = full if cell.sparsity is None else int(full * (1 - cell.sparsity)) - cell.seed
    usage = Usage(
        params=used,
        params_full=full,
        bytes=4 * used + 8 * 2002,
        values_bytes=4 * used,
        index_bytes=8 * 2002,
        row_meta_bytes=0,
        dense_params=0,
        dtype="fp32",
        layout="jagged",
        tables=1,
        d_max=16,
        n_users=1000,
        n_items=1000,
        params_budget=used + 5,
    )
    results = RunResult(
        kind="search",
        method=cell.method,
        dataset="toy",
        protocol="paper",
        split_fingerprint="f" * 64,
        backbone="mf",
        seed=cell.seed,
        config_hash=f"{abs(hash((cell, 'cfg'))) % 16**16:016x}",
        embudget_version="0.1.0",
        torch_version="2.0.0",
        device="cpu",
        sparsity=0.0 if cell.sparsity is None else cell.sparsity,  # as run_search records
        kept_fraction=None,
        budgeted=cell.method != "full",
        usage=usage,
        storage="masked",
        valid=Metrics(test, len(users)),
        test=Metrics(test, len(users)),
        timing=Timing(
            pretrain=1.0,
            search=3600.0 * 1.5 if cell.method == "bet" else 0.0,
            retrain=2.0,
            total=10.0,
        ),
        n_probes=3,
    )
    lines = grid.result_records(cell, grid.cell_config(cell), results, str(run_dir))
    with open(out / grid.RESULTS_FILE, "a") as f:
        f.write("".join(json.dumps(x) + "\n" for x in lines))


def _toy_results(out: Path, seeds: tuple[int, ...] = (0, 1, 2)) -> None:
    rng = np.random.default_rng(7)
    out.mkdir(parents=True, exist_ok=True)
    for (method, sp), level in LEVEL.items():
        for seed in seeds:
            users = np.arange(N_USERS)
            if method == "bet" and seed == 1:
                users = np.delete(users, [3, 50])  # users missing in one run: intersection
            per_user = {
                m: (level + 0.05 * rng.random(users.size)).astype(np.float32) for m in METRICS
            }
            _write_cell(out, grid.Cell("toy", "mf", method, sp, seed), per_user, users)


def _records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (out / grid.RESULTS_FILE).read_text().splitlines()]


def _parse_table(md: str, title: str) -> tuple[list[str], dict[tuple[str, str], dict[str, str]]]:
    """Header and {(sparsity, method): {column: cell text}} of the table under ``title``."""
    lines = md.split(title, 1)[1].splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("| Sparsity"))
    head = [c.strip() for c in lines[start].strip("|").split("|")]
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[(cells[0], cells[1])] = dict(zip(head, cells, strict=True))
    return head, rows


def _expected(records: list[dict[str, Any]], method: str, sp: float | None, name: str):
    metric, k = name.split("@")
    vals = [
        r["value"]
        for r in sorted(records, key=lambda r: r["seed"])
        if r["method"] == method
        and (method == "full" or r["sparsity"] == sp)
        and r["split"] == "test"
        and r["metric"] == metric
        and r["k"] == int(k)
    ]
    return np.asarray(vals)


def _seed_mean_reference(out: Path, run_dirs: list[str], metric: str) -> dict[int, float]:
    """Loop reference: {user: mean over runs} for users present in every run."""
    maps = []
    for rd in run_dirs:
        with np.load(out / rd / "per_user_test.npz") as z:
            maps.append({int(u): float(v) for u, v in zip(z["users"], z[metric], strict=True)})
    common = set.intersection(*(set(m) for m in maps))
    return {u: sum(m[u] for m in maps) / len(maps) for u in sorted(common)}


def _clean(text: str) -> str:
    return text.replace("**", "").replace(" †", "")


def test_table_holds_the_numbers_of_results_jsonl(tmp_path: Path) -> None:
    out = tmp_path / "res"
    _toy_results(out)
    rep = report.write_report(out)
    md = rep.path.read_text()
    assert rep.path == out / "report.md"
    recs = _records(out)
    head, rows = _parse_table(md, "### toy (paper), mf")
    assert head[:6] == ["Sparsity", "Method", "Recall@5", "NDCG@5", "Recall@20", "NDCG@20"]
    assert list(rows) == [
        ("—", "Full"),
        ("0.8", "SU"),
        ("0.8", "SR"),
        ("0.8", "BET"),
        ("0.9", "SU"),
        ("0.9", "SR"),
        ("0.9", "BET"),
    ]
    for (sp_text, label), cells in rows.items():
        method = {"Full": "full", "SU": "su", "SR": "sr", "BET": "bet"}[label]
        sp = None if sp_text == "—" else float(sp_text)
        for col, name in zip(
            head[2:6], ("recall@5", "ndcg@5", "recall@20", "ndcg@20"), strict=True
        ):
            v = _expected(recs, method, sp, name)
            assert len(v) == 3
            assert _clean(cells[col]) == f"{v.mean():.4f} ± {v.std(ddof=1):.4f}"
        used = [
            r["params_used"]
            for r in recs
            if r["method"] == method and r["sparsity"] == (0.0 if sp is None else sp)
        ]
        assert cells["Params used"] == f"{np.mean(used):,.0f}"
        assert cells["Search cost (h:mm)"] == ("1:30" if method == "bet" else "0:00")
    # bold: the best budgeted mean per column at each sparsity, never the full model
    for sp in ("0.8", "0.9"):
        for col, name in zip(
            head[2:6], ("recall@5", "ndcg@5", "recall@20", "ndcg@20"), strict=True
        ):
            means = {
                lab: _expected(recs, m, float(sp), name).mean()
                for lab, m in (("SU", "su"), ("SR", "sr"), ("BET", "bet"))
            }
            best = max(means, key=lambda k: means[k])
            bold = [lab for lab in means if rows[(sp, lab)][col].startswith("**")]
            assert bold == [best]
    assert not any(c.startswith("**") for c in rows[("—", "Full")].values())
    assert "split seed 42" in md and "training seeds 0, 1, 2" in md
    assert "preset faithful" in md and "not corrected for multiple comparisons" in md


def test_p_values_match_scipy_on_seed_averaged_users(tmp_path: Path) -> None:
    out = tmp_path / "res"
    _toy_results(out)
    tables, _ = report.build_tables(out)
    (table,) = tables
    md = report.render_table(table)
    _, rows = _parse_table(md, "### toy (paper), mf")
    recs = _records(out)
    run_dirs: dict[tuple[str, float], list[str]] = {}
    for r in recs:
        if r["split"] == "test" and r["metric"] == "recall" and r["k"] == 20:
            run_dirs.setdefault((r["method"], r["sparsity"]), []).append(r["run_dir"])
    strongest = {0.8: "sr", 0.9: "su"}
    for sp, base in strongest.items():
        ps = []
        for metric in ("recall@20", "ndcg@20"):
            a = _seed_mean_reference(out, run_dirs[("bet", sp)], metric)
            b = _seed_mean_reference(out, run_dirs[(base, sp)], metric)
            users = sorted(set(a) & set(b))
            assert len(users) == N_USERS - 2
            want = scipy.stats.ttest_rel([a[u] for u in users], [b[u] for u in users])
            c = next(
                c
                for c in table.comparisons
                if c.sparsity == sp and c.metric == metric and c.strongest
            )
            assert c.baseline == base and c.seeds == [0, 1, 2]
            assert c.test is not None and c.test["n"] == len(users)
            assert c.test["p"] == pytest.approx(want.pvalue, rel=1e-6, abs=1e-300)
            assert c.test["t"] == pytest.approx(want.statistic, rel=1e-6)
            diff = np.mean([a[u] - b[u] for u in users])
            assert c.test["mean_diff"] == pytest.approx(diff, rel=1e-6)
            ps.append(want.pvalue)
            # † on the BET cell exactly when the strongest-baseline test has p < 0.05
            assert rows[(f"{sp:g}", "BET")][report.LABELS[metric]].endswith("†") == (
                want.pvalue < 0.05
            )
        cell = rows[(f"{sp:g}", "BET")]["p vs best baseline (R@20 / N@20)"]
        assert cell == f"{ps[0]:.2g} / {ps[1]:.2g} ({report.LABELS[base]})"
    # every baseline is tested, and the detail table shows each one
    assert {(c.sparsity, c.baseline) for c in table.comparisons} == {
        (0.8, "su"),
        (0.8, "sr"),
        (0.9, "su"),
        (0.9, "sr"),
    }
    assert md.count("(strongest)") == 4  # 2 sparsities x 2 tested metrics


def test_one_seed_reads_n1_and_stale_configs_are_noted(tmp_path: Path) -> None:
    out = tmp_path / "res"
    _toy_results(out, seeds=(0,))
    # the same su cell recorded again under another config: the later record is shown
    recs = _records(out)
    again = [dict(r, config_hash="0" * 16, run_id="new", value=0.5) for r in recs]
    again = [r for r in again if r["cell_id"] == "toy-mf-su-s0.8-seed0"]
    with open(out / grid.RESULTS_FILE, "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in again))
    rep = report.write_report(out, tmp_path / "elsewhere" / "r.md")
    md = rep.path.read_text()
    _, rows = _parse_table(md, "### toy (paper), mf")
    assert _clean(rows[("0.8", "SU")]["Recall@20"]) == "0.5000 (n=1)"
    v = _expected(recs, "bet", 0.9, "ndcg@5")
    assert _clean(rows[("0.9", "BET")]["NDCG@5"]) == f"{v[0]:.4f} (n=1)"
    assert any("toy-mf-su-s0.8-seed0" in n for n in rep.notes)
    assert "Seed std" in md and "| – |" in md  # no seed std with one seed


def test_pareto_points_flag_exactly_the_non_dominated(tmp_path: Path) -> None:
    out = tmp_path / "res"
    _toy_results(out)
    (table,) = report.build_tables(out)[0]
    pts = report.pareto_points(table, "recall@20")
    assert len(pts) == 6 and all(p["method"] != "full" for p in pts)
    for p in pts:
        dominated = any(
            q["params_used"] <= p["params_used"]
            and q["mean"] >= p["mean"]
            and (q["params_used"] < p["params_used"] or q["mean"] > p["mean"])
            for q in pts
        )
        assert p["pareto"] == (not dominated)
    assert any(p["pareto"] for p in pts)


def test_report_without_matplotlib_writes_tables_and_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "res"
    _toy_results(out)
    monkeypatch.setattr(report, "figure_class", lambda: None)
    rep = report.write_report(out, plot=True)
    md = rep.path.read_text()
    assert report.NO_PLOT_NOTE in md and report.NO_PLOT_NOTE in rep.notes
    assert "### toy (paper), mf" in md and "| 0.8 | BET |" in md
    assert rep.figures == [] and not (out / "figures").exists() and "![" not in md
    # without --plot, no note at all
    assert report.NO_PLOT_NOTE not in report.write_report(out).path.read_text()


def test_report_with_matplotlib_draws_pareto_png_and_csv(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "res"
    _toy_results(out)
    rep = report.write_report(out, plot=True)
    png = out / "figures" / "toy-paper-mf-pareto.png"
    csv_path = png.with_suffix(".csv")
    assert png in rep.figures and csv_path in rep.figures
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = rep.path.read_text()
    assert "](figures/toy-paper-mf-pareto.png)" in md and report.NO_PLOT_NOTE not in md
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "method,sparsity,metric,params_used,mean,std,n_seeds,pareto"
    assert len(lines) == 1 + 2 * 6  # Recall@20 and NDCG@20 panels, six budgeted rows each
    (table,) = rep.tables
    first = report.pareto_points(table, "recall@20")[0]
    assert lines[1].split(",")[:3] == [first["method"], f"{first['sparsity']}", "recall@20"]
    assert float(lines[1].split(",")[4]) == pytest.approx(first["mean"])


def test_report_on_a_real_tiny_grid_via_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "res"
    settings = [
        "model.d_max=16",
        "train.batch_users=1000",
        "train.eval_every_steps=20",
        "train.patience=1",
        "train.max_steps=40",
        "search.iterations=2",
        "search.sampler.candidates=4",
        "search.probe.epochs=0",
        "search.retrain.top=1",
        "search.probe.user_fraction=0.3",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    args = ["bench", "--datasets", "gowalla-mini", "--models", "mf", "--methods", "full,su,bet"]
    args += ["--sparsities", "0.9", "--seeds", "0", "--out", str(out), "--no-progress"]
    assert main(args + [x for s in settings for x in ("--set", s)]) == 0
    assert main(["report", str(out), "--plot"]) == 0
    assert "report:" in capsys.readouterr().out
    md = (out / "report.md").read_text()
    _, rows = _parse_table(md, "### gowalla-mini (paper), mf")
    assert list(rows) == [("—", "Full"), ("0.9", "SU"), ("0.9", "BET")]
    recs = _records(out)
    for (_, label), cells in rows.items():
        r = next(
            r
            for r in recs
            if r["method"] == label.lower()
            and r["split"] == "test"
            and r["metric"] == "ndcg"
            and r["k"] == 20
        )
        assert _clean(cells["NDCG@20"]) == f"{r['value']:.4f} (n=1)"
        assert cells["Params used"] == f"{r['params_used']:,}"
    assert re.search(r"settings differing from the faithful defaults: [^)]*model\.d_max=16", md)
    # at most 40 steps with patience 1: the footnote names every fit the step cap ended
    capped = set()
    for r in recs:
        if r["split"] == "test" and r["metric"] == "ndcg" and r["k"] == 20:
            if r["method"] == "full" or r["theta0_stopped_early"] is False:
                assert r["method"] == "full" or r["theta0_steps"] is not None
                if r["theta0_stopped_early"] is False:
                    capped.add("Θ0")
            if r["method"] != "full" and r["stopped_early"] is False:
                capped.add(f"{r['method'].upper()} 90 %")
    if capped:
        names = ", ".join(sorted(capped))
        assert f"Ended by the step cap, not early stopping: {names}." in md
    else:
        assert "Every fit stopped early." in md
    if report.figure_class() is not None:
        assert (out / "figures" / "gowalla-mini-paper-mf-sizes.png").is_file()
        assert "![Size vs popularity](figures/gowalla-mini-paper-mf-sizes.png)" in md


def test_report_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(RunDirError, match="embudget bench"):
        report.write_report(tmp_path)
    assert main(["report", str(tmp_path)]) == 2
    assert "error:" in capsys.readouterr().err
    (tmp_path / grid.RESULTS_FILE).write_text("")
    with pytest.raises(RunDirError, match="no finished cell"):
        report.write_report(tmp_path)


def test_a_metric_the_runs_did_not_compute_shows_a_dash(tmp_path: Path) -> None:
    out = tmp_path / "res"
    _toy_results(out, seeds=(0, 1))
    recs = [r for r in _records(out) if not (r["metric"] == "recall" and r["k"] == 5)]
    recs = [dict(r, n_records=r["n_records"] - 2) for r in recs]  # as if eval.ks lacked 5
    (out / grid.RESULTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in recs))
    _, rows = _parse_table(report.write_report(out).path.read_text(), "### toy (paper), mf")
    assert all(cells["Recall@5"] == "–" for cells in rows.values())
    v = _expected(recs, "bet", 0.8, "ndcg@5")
    assert _clean(rows[("0.8", "BET")]["NDCG@5"]) == f"{v.mean():.4f} ± {v.std(ddof=1):.4f}"


def test_footnote_lists_every_value_of_a_setting_that_differs_between_cells(
    tmp_path: Path,
) -> None:
    from embudget.config import load_config

    values = {"a": ["search.retrain.top=2"], "b": ["search.retrain.top=1"], "c": []}
    runs = []
    for name, over in values.items():
        (tmp_path / name).mkdir()
        cfg = load_config(overrides=over + ["search.iterations=7"], fast=False)
        (tmp_path / name / "config.yaml").write_text(cfg.to_yaml())
        meta = {"run_id": name, "run_dir": name}
        runs.append(report.Run(name, "bet", 0.8, 0, name, 1, 0.2, 0.0, meta))
    dev = report.table_deviations(tmp_path, runs)
    assert dev["search.iterations"] == 7  # the same everywhere: one value
    assert dev["search.retrain.top"] == "2 | 1 | default"  # run c keeps the faithful top-5
