"""Errors keep their message and attributes across processes (pickle round trip)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from embudget.data.fetch import ChecksumError, DownloadError
from embudget.errors import (
    BudgetError,
    BudgetErrorType,
    ConfigError,
    DamagedFileError,
    DataFormatError,
    EmbudgetError,
    FileAccessError,
)

ERRORS: list[EmbudgetError] = [
    ConfigError("unknown key 'x'"),
    DataFormatError("bad row", path="a.csv", line=3),
    BudgetError("too small", BudgetErrorType.INFEASIBLE),
    DamagedFileError("ckpt.pt", "truncated", "delete it"),
    FileAccessError("/ro/x", "read-only file system", "choose another --out", errno=30),
    DownloadError("offline", ("http://x",), Path("/c/d")),
    ChecksumError("mismatch", "f.txt", "aa", "bb"),
]


@pytest.mark.parametrize("err", ERRORS, ids=lambda e: type(e).__name__)
def test_errors_survive_pickling(err: EmbudgetError) -> None:
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err)
    assert str(back) == str(err) and back.args == err.args
    assert back.__dict__ == err.__dict__
