"""The scripts in examples/ run end to end in their ``--quick`` mode on the repository's data."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from embudget.deploy.container import open_container

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *args: str, timeout: float = 300) -> str:
    """stdout of ``python examples/<name> *args``; fails the test on a nonzero exit."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={k: v for k, v in os.environ.items() if k != "EMBUDGET_DATA"}
        | {"OMP_NUM_THREADS": "1"},
        cwd=EXAMPLES.parent,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.slow
def test_your_own_data_quick(tmp_path: Path) -> None:
    out = run_example("your_own_data.py", "--quick", "--out", str(tmp_path))
    budget = re.search(r"budget met: ([\d,]+) params used <= budget ([\d,]+) \(True\)", out)
    assert budget, out
    used, limit = (int(g.replace(",", "")) for g in budget.groups())
    assert 0 < used <= limit
    score = re.search(r"validation recall@20: (\d\.\d+)", out)
    assert score and 0.0 < float(score.group(1)) <= 1.0, out
    assert "protocol temporal" in out
    assert (tmp_path / "log.csv").read_text().startswith("customer_id,product_id,ts\n")
    with open_container(tmp_path / "table.safetensors") as c:  # exported without history
        assert c.meta["history"] is False
        assert not any(n.startswith(("train.", "history.")) for n in c.entries)


@pytest.mark.slow
def test_two_tower_quick() -> None:
    out = run_example("two_tower.py", "--quick")
    lines = {m: re.search(rf"^{m}: (.*)$", out, re.M) for m in ("bet", "su")}
    assert all(lines.values()), out
    budgets = set()
    for line in lines.values():
        assert line is not None
        found = re.search(r"params used ([\d,]+) <= budget ([\d,]+) \(True\)", line.group(1))
        assert found, out
        used, limit = (int(g.replace(",", "")) for g in found.groups())
        assert 0 < used <= limit
        budgets.add(limit)
        for split in ("validation", "test"):
            score = re.search(rf"{split} recall@20 (\d\.\d+)", line.group(1))
            assert score and 0.0 < float(score.group(1)) <= 1.0, out
    assert len(budgets) == 1  # both methods at the same budget
