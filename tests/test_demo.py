"""The README's main job (``embudget demo``), shrunk to gowalla-mini and a 16-wide table."""

from pathlib import Path

import pytest
import yaml

from embudget.cli import main
from embudget.config import fast_preset, flatten

SMALL = [
    "model.d_max=16",
    "train.batch_users=1000",
    "train.eval_every_steps=20",
    "train.max_steps=40",
    "search.iterations=3",
    "search.sampler.candidates=4",
]


def _search_config(run: Path) -> dict:
    return flatten(yaml.safe_load((run / "config.yaml").read_text())["search"])


@pytest.mark.parametrize("mode", [None, "--faithful"])
def test_demo_runs_the_default_mode_or_the_faithful_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: str | None
) -> None:
    out = tmp_path / "demo"
    args = ["demo", "--dataset", "gowalla-mini", "--sparsity", "0.8", "--out", str(out)]
    args += ["--no-progress"]
    args += [x for s in SMALL for x in ("--set", s)] + ([mode] if mode else [])
    assert main(args) == 0
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith("| ") and "---" not in line]
    assert [r.split("|")[1].strip() for r in rows[1:]] == ["full", "su", "bet"]
    for row in rows[2:]:  # SU and BET keep to the budget
        used, budget = (int(x.replace(",", "")) for x in row.split("|")[4].split("/"))
        assert 0 < used <= budget
    bet = _search_config(out / "bet")
    assert bet["retrain.top"] == 1 and bet["iterations"] == 3  # the demo's cut, then --set
    if mode is None:  # MF's default is fast mode, with its own probes
        assert all(bet[k] == v for k, v in flatten(fast_preset("mf")["search"]).items())
    else:  # the faithful search, cut further for the demo
        assert bet["pretrain.mode"] == "standard" and bet["probe.epochs"] == 2
        assert bet["probe.user_fraction"] == 0.25 and bet["probe.steps"] is None
    assert main(args) == 0  # finished runs are reused: the same table, seconds included
    assert capsys.readouterr().out == printed
