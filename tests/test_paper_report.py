"""`embudget report --paper`: one row per Table 1 cell and procedure, our figures beside the
paper's, ratios, blanks where the paper's figure has no source, the paired p-value against SU,
the reductions read from each run's settings, and no torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from embudget.bench import paper, paper_table, records
from embudget.bench.aggregate import build_tables
from embudget.bench.cells import Cell, Settings, cell_config, deviations
from embudget.cli import main
from embudget.errors import ResultError, RunDirError
from embudget.result import Metrics, Training
from test_result import NO_TORCH, sample

ROOT = Path(__file__).resolve().parents[1]
N_USERS = 50
CAP = ("train.max_steps=3000", "train.eval_every_steps=500")
#: (backbone, method, sparsity, seed) -> (per-user recall@20 level, extra settings)
CELLS = {
    ("lightgcn", "su", 0.8, 0): (0.14, CAP),
    ("lightgcn", "su", 0.8, 1): (0.15, CAP),
    ("lightgcn", "bet", 0.8, 0): (0.16, (*CAP, "search.iterations=20")),
    ("lightgcn", "bet", 0.8, 1): (0.17, (*CAP, "search.iterations=20")),
    ("lightgcn", "sr", 0.9, 0): (0.11, CAP),
    ("lightgcn", "bet", 0.9, 0): (0.13, (*CAP, "search.probe.steps=20")),
    ("mf", "su", 0.8, 0): (0.09, ()),  # MF is not a backbone of the paper's Table 1
}


def _per_user(level: float, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + int(level * 1000))
    return {
        m: (level + 0.02 * rng.random(N_USERS)).astype(np.float32) for m in ("recall@20", "ndcg@20")
    }


Fits = dict[tuple[str, str, float, int], tuple[Training, Training | None]]


def _write(
    out: Path,
    with_config: bool = True,
    fits: Fits | None = None,
    cells: dict[tuple[str, str, float, int], tuple[float, tuple[str, ...]]] = CELLS,
) -> dict[str, dict[str, object]]:
    """A results directory the way bench writes one (``cells``), the cells in ``fits`` with
    how their fits (kept model, Θ0) ended; returns each run's deviations."""
    settings: dict[str, dict[str, object]] = {}
    for (backbone, method, sp, seed), (level, overrides) in cells.items():
        cell = Cell("gowalla", backbone, method, sp, seed)
        cfg = cell_config(cell, Settings(overrides=overrides))
        run_dir = f"runs/{cell.cell_id}-{cfg.hash()[:8]}"
        per_user = _per_user(level, seed)
        (out / run_dir).mkdir(parents=True)
        np.savez(out / run_dir / "per_user_test.npz", users=np.arange(N_USERS), **per_user)
        if with_config:
            (out / run_dir / "config.yaml").write_text(cfg.to_yaml())
        means = {m: float(v.mean()) for m, v in per_user.items()}
        res = sample(
            method=method,
            seed=seed,
            sparsity=sp,
            dataset="gowalla",
            backbone=backbone,
            config_hash=cfg.hash(),
            test=Metrics(means, N_USERS),
        )
        if fits and (backbone, method, sp, seed) in fits:
            kept, theta0 = fits[(backbone, method, sp, seed)]
            res = replace(res, training=kept, theta0_training=theta0)
        lines = records.result_records(cell, cfg, res, run_dir)
        settings[lines[0]["run_id"]] = deviations(cfg)
        with open(out / records.RESULTS_FILE, "a") as f:
            f.write("".join(json.dumps(x) + "\n" for x in lines))
    return settings


def _rows(md: str, first: str) -> list[dict[str, str]]:
    """The rows of the Markdown table whose head starts with ``first``, as {column: text}."""
    lines = md.splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith(first))
    head = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(head, (c.strip() for c in line.strip("|").split("|")), strict=True)))
    return rows


def _table(md: str) -> dict[tuple[str, str, str], dict[str, str]]:
    """{(sparsity, method, procedure): {column: text}} of the full paper table."""
    procedure = "Procedure: settings that differ from bet.md's (bet.md's value)"
    rows = _rows(md, "| Dataset | Backbone | Sparsity | Method |")
    return {(r["Sparsity"], r["Method"], r[procedure]): r for r in rows}


def _headline(md: str) -> dict[str, dict[str, str]]:
    """{sparsity: {column: text}} of the summary table above the full one."""
    return {r["Sparsity"]: r for r in _rows(md, "| Dataset | Backbone | Sparsity | Seeds |")}


def _mean(backbone: str, method: str, sp: float, metric: str, seeds: tuple[int, ...]) -> float:
    return float(
        np.mean([_per_user(CELLS[(backbone, method, sp, s)][0], s)[metric].mean() for s in seeds])
    )


def test_rows_ratios_blanks_and_p_values(tmp_path: Path) -> None:
    out = tmp_path / "res"
    _write(out)
    rep = paper.paper_report([out])
    rows = _table(rep.markdown)
    procedures = {k[:2]: k[2] for k in rows}
    # one row per Table 1 cell and procedure; MF is left out and said so
    assert set(procedures) == {("80 %", "SU"), ("80 %", "BET"), ("90 %", "SR"), ("90 %", "BET")}
    assert any("gowalla mf (protocol paper): SU" in n for n in rep.notes)
    assert (
        procedures[("80 %", "SU")] == "faithful: 3,000-step cap, validation every 500 steps (2,000)"
    )
    assert procedures[("80 %", "BET")].startswith("faithful: 3,000-step cap, T 20 (50)")
    assert procedures[("90 %", "BET")].startswith("fast: 3,000-step cap, 20-step probes")

    su = rows[("80 %", "SU", procedures[("80 %", "SU")])]
    bet = rows[("80 %", "BET", procedures[("80 %", "BET")])]
    su_r, bet_r = (_mean("lightgcn", m, 0.8, "recall@20", (0, 1)) for m in ("su", "bet"))
    assert su["Seeds"] == "0, 1" and su["R@20 ours"].startswith(f"{su_r:.4f} ± ")
    assert su["R@20 paper"] == "0.1674" and su["N@20 paper"] == "0.1400"
    assert su["ours / paper (R@20)"] == f"{su_r / 0.1674:.2f}"
    assert bet["R@20 paper"] == "0.1753"
    assert bet["BET / SU ours (R@20)"] == f"{bet_r / su_r:.2f}"
    assert bet["BET / SU paper"] == f"{0.1753 / 0.1674:.2f}"
    # p: paired over users, each user's score averaged over seeds 0 and 1
    expected = []
    for metric in ("recall@20", "ndcg@20"):
        a = np.mean(
            [_per_user(CELLS[("lightgcn", "bet", 0.8, s)][0], s)[metric] for s in (0, 1)], 0
        )
        b = np.mean([_per_user(CELLS[("lightgcn", "su", 0.8, s)][0], s)[metric] for s in (0, 1)], 0)
        expected.append(f"{scipy.stats.ttest_rel(a, b).pvalue:.2g}")
    assert bet["p vs SU (R@20 / N@20)"] == " / ".join(expected)

    # blanks: no source gives SR's figures or the 90 % NDCG; the quoted 90 % figures are marked
    sr = rows[("90 %", "SR", procedures[("90 %", "SR")])]
    assert (sr["R@20 paper"], sr["ours / paper (R@20)"], sr["N@20 paper"]) == ("–", "–", "–")
    bet9 = rows[("90 %", "BET", procedures[("90 %", "BET")])]
    assert bet9["R@20 paper"] == "0.1620 ‡" and bet9["N@20 paper"] == "–"
    assert bet9["BET / SU paper"] == "1.10 ‡"
    assert bet9["BET / SU ours (R@20)"] == "–"  # no SU row at 90 %
    assert "gowalla ngcf (all 9 cells)" in rep.markdown
    assert "yelp2018 lightgcn (all 9 cells)" in rep.markdown


def test_the_headline_keeps_one_bet_row_per_cell_by_how_it_ran_not_by_its_figures(
    tmp_path: Path,
) -> None:
    # a second procedure in each BET cell, with far better figures than the first
    better = {
        ("lightgcn", "bet", 0.8, 0): (0.30, (*CAP, "search.probe.steps=20")),  # fast, 1 seed
        ("lightgcn", "bet", 0.9, 0): (0.30, (*CAP, "search.iterations=20")),  # faithful
        ("lightgcn", "su", 0.9, 0): (0.10, CAP),  # the 90 % SU both were trained like
    }
    _write(tmp_path / "a")
    _write(tmp_path / "b", cells=better)
    md = paper.paper_report([tmp_path / "a", tmp_path / "b"]).markdown
    head = _headline(md)
    assert set(head) == {"80 %", "90 %"}  # one row per cell that has a BET row
    # 80 %: two seeds before one, whatever the figures
    su_r, bet_r = (_mean("lightgcn", m, 0.8, "recall@20", (0, 1)) for m in ("su", "bet"))
    assert head["80 %"]["Seeds"] == "0, 1"
    assert head["80 %"]["BET R@20 / N@20"].startswith(f"{bet_r:.4f} / ")
    assert head["80 %"]["SU R@20 / N@20"].startswith(f"{su_r:.4f} / ")
    assert head["80 %"]["BET / SU ours (R@20)"] == f"{bet_r / su_r:.2f}"
    assert head["80 %"]["BET R@20 ours / paper"] == f"{bet_r / 0.1753:.2f}"
    assert head["80 %"]["BET's procedure"] == "faithful, 3,000-step cap"
    # 90 %: one seed each; the backbone's default procedure (fast for LightGCN) before faithful
    bet9 = _mean("lightgcn", "bet", 0.9, "recall@20", (0,))
    assert head["90 %"]["BET's procedure"] == "fast, 3,000-step cap"
    assert head["90 %"]["BET R@20 / N@20"].startswith(f"{bet9:.4f} / ")
    assert head["90 %"]["BET R@20 ours / paper"] == f"{bet9 / 0.1620:.2f} ‡"
    # a row whose every fit reached early stopping comes first of all
    done = Training(900, 600, True)
    _write(tmp_path / "c", cells=better, fits={("lightgcn", "bet", 0.8, 0): (done, done)})
    head = _headline(paper.paper_report([tmp_path / "a", tmp_path / "c"]).markdown)
    assert head["80 %"]["Seeds"] == "0"
    assert head["80 %"]["BET's procedure"] == "fast, every fit to early stopping"


def test_the_procedure_says_whether_the_fits_reached_early_stopping(tmp_path: Path) -> None:
    done, capped = Training(900, 600, True), Training(3000, 3000, False)
    fits: Fits = {
        ("lightgcn", "su", 0.8, 0): (done, None),
        ("lightgcn", "su", 0.8, 1): (capped, None),
        ("lightgcn", "bet", 0.8, 0): (done, done),
        ("lightgcn", "bet", 0.8, 1): (done, done),
        ("lightgcn", "bet", 0.9, 0): (done, capped),
    }
    out = tmp_path / "res"
    _write(out, fits=fits)
    procedures = {k[:2]: k[2] for k in _table(paper.paper_report([out]).markdown)}
    assert procedures[("80 %", "SU")].endswith("; the step cap ended SU 80 %")
    assert procedures[("80 %", "BET")].endswith("; every fit to early stopping")
    assert procedures[("90 %", "BET")].endswith("; the step cap ended Θ0")
    # not recorded: no note
    assert (
        procedures[("90 %", "SR")] == "faithful: 3,000-step cap, validation every 500 steps (2,000)"
    )
    tables, _ = build_tables(out)
    (gowalla,) = [t for t in tables if t.backbone == "lightgcn"]
    assert gowalla.fits == (
        "Ended by the step cap, not early stopping: SU 80 %, Θ0; not recorded for 1 of 6 runs."
    )


def test_settings_json_is_used_only_where_it_gives_the_recorded_hash(tmp_path: Path) -> None:
    out = tmp_path / "res"
    settings = _write(out, with_config=False)
    (out / records.SETTINGS_FILE).write_text(json.dumps({"runs": settings}))
    with_file = paper.paper_report([out]).markdown  # no config.yaml: settings.json alone
    bet_run = next(k for k in settings if "-bet-s0.9-" in k)
    settings[bet_run] = {**settings[bet_run], "search.probe.steps": 50}  # not what ran
    (out / records.SETTINGS_FILE).write_text(json.dumps({"runs": settings}))
    rep = paper.paper_report([out])
    assert "fast: 3,000-step cap, 20-step probes" in with_file
    assert "| 90 % | BET | settings not recorded |" in rep.markdown
    assert any(bet_run in n and "without recorded settings" in n for n in rep.notes)


def test_record_settings_writes_what_the_report_reads_without_run_configs(tmp_path: Path) -> None:
    out = tmp_path / "res"
    settings = _write(out)
    with_configs = paper.paper_report([out]).markdown
    assert records.record_settings(out) == settings
    for cfg in out.glob("runs/*/config.yaml"):
        cfg.unlink()
    assert paper.paper_report([out]).markdown == with_configs  # settings.json alone
    doc = json.loads((out / records.SETTINGS_FILE).read_text())
    assert doc["runs"] == settings and list(doc["runs"]) == sorted(settings)
    # run directories gone: each run keeps its entry (a committed folder that new runs extend)
    assert records.record_settings(out) == settings
    assert json.loads((out / records.SETTINGS_FILE).read_text()) == doc
    bet_run = next(k for k in settings if "-bet-s0.9-" in k)
    doc["runs"][bet_run] = {**settings[bet_run], "search.probe.steps": 50}  # not what ran
    (out / records.SETTINGS_FILE).write_text(json.dumps(doc))
    with pytest.raises(ResultError, match="do not rebuild"):
        records.record_settings(out)
    del doc["runs"][bet_run]
    (out / records.SETTINGS_FILE).write_text(json.dumps(doc))
    with pytest.raises(ResultError, match="is missing"):  # nothing left to record from
        records.record_settings(out)
    assert json.loads((out / records.SETTINGS_FILE).read_text()) == doc  # the file is kept


def test_folder_report_names_each_procedure_from_configs_or_settings_json(tmp_path: Path) -> None:
    out = tmp_path / "res"
    _write(out)
    with_configs = {t.backbone: t for t in build_tables(out)[0]}
    # cut-down faithful runs (step caps, fewer iterations) are not fast mode; 20-step probes are
    assert with_configs["lightgcn"].presets == ["faithful", "fast"]
    assert with_configs["lightgcn"].deviations["search.probe.steps"] == "20 | default"
    assert with_configs["mf"].presets == ["faithful"] and with_configs["mf"].deviations == {}
    records.record_settings(out)
    for cfg in out.glob("runs/*/config.yaml"):
        cfg.unlink()
    committed = {t.backbone: t for t in build_tables(out)[0]}  # settings.json alone
    for name, table in with_configs.items():
        assert (committed[name].presets, committed[name].deviations) == (
            table.presets,
            table.deviations,
        )
    (out / records.SETTINGS_FILE).unlink()  # neither: the procedure results.jsonl recorded
    bare = {t.backbone: t for t in build_tables(out)[0]}
    assert bare["lightgcn"].presets == ["faithful", "fast"]
    assert bare["lightgcn"].deviations == {}


def test_paths_globs_and_errors(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _write(a)
    _write(b)
    found = paper.find_results([str(tmp_path / "*"), a / records.RESULTS_FILE])
    assert found == [a / records.RESULTS_FILE, b / records.RESULTS_FILE]
    assert paper.find_results([tmp_path]) == found  # a folder is searched recursively
    rep = paper.paper_report([a, b])  # the same runs twice: counted once
    assert "| 0, 1 |" in rep.markdown
    with pytest.raises(RunDirError, match="matches no file"):
        paper.find_results([tmp_path / "nothing*"])
    assert main(["report", str(a), str(b)]) == 2  # several directories need --paper


def test_cli_prints_the_table_without_torch(tmp_path: Path) -> None:
    out = tmp_path / "res"
    _write(out)
    code = f"""
        from embudget.cli import main
        rc = main(["report", "--paper", {str(out)!r}])
        assert "torch" not in sys.modules
        sys.exit(rc)
        """
    proc = subprocess.run(
        [sys.executable, "-c", NO_TORCH + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "## The BET paper's Table 1 beside ours" in proc.stdout
    assert "| gowalla | lightgcn | 80 % | SU |" in proc.stdout


def test_committed_results_all_have_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every committed Table 1 run's settings are recovered (settings.json, hash-checked)."""
    results = ROOT / "results"
    if not any(results.glob("*/results.jsonl")):
        pytest.skip("no committed results")
    rep = paper.paper_report([results])
    assert not any("without recorded settings" in n for n in rep.notes)
    su80 = next(r for r in rep.rows if r.cell == ("gowalla", "lightgcn", 0.8, "su"))
    assert paper_table.FIGURES[su80.cell]["recall@20"] == 0.1674
    # RESULTS.md opens with this very table, regenerated whenever a results folder is added
    monkeypatch.chdir(ROOT)
    rep = paper.paper_report(["results"])
    text = (ROOT / "RESULTS.md").read_text()
    assert rep.markdown in text, "regenerate it: embudget report --paper results/"
    assert text.index(rep.markdown) == text.index("\n## ") + 1  # the first section


def test_settings_read_as_words() -> None:
    from embudget.bench.paper_markdown import describe

    text = describe({"train.max_steps": 3000, "search.probe.epochs": 1, "search.iterations": 10})
    assert text == "faithful: 3,000-step cap, T 10 (50), h 1 epoch (10)"
    assert "h 2 epochs (10)" in describe({"search.probe.epochs": 2})
    assert (
        describe({"train.min_delta": 0.001})
        == "faithful: patience reset only by gains > 0.001 in Q"
    )
