"""Equivalence proof: the fixed small runs of ``cases.py`` give exactly the recorded outputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cases import cases, extract  # noqa: E402
from runner import run_case  # noqa: E402

GOLDEN = json.loads((HERE / "golden.json").read_text())


def test_every_case_is_recorded() -> None:
    assert sorted(GOLDEN) == sorted(cases())


@pytest.mark.parametrize("name", sorted(cases()))
def test_outputs_are_bit_identical(name: str, tmp_path: Path) -> None:
    command, overrides, fast = cases()[name]
    run_case(command, overrides, fast, tmp_path / name, tmp_path / "cache")
    assert extract(tmp_path / name) == GOLDEN[name]
