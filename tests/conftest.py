"""Test-wide settings: one torch thread, and no data from outside the repository.

One thread: pytest-xdist already uses both cores, and on tiny tensors every op is dominated by
thread synchronisation (on a busy 2-core machine a 20 x 20 training step took ~50 ms with 2
threads and ~3 ms with one).

Data guard: the suite must pass in a bare clone, so a test may read only the datasets shipped in
the package (``gowalla``, ``gowalla-mini``), the files under ``tests/`` and what it writes to its
temporary directories. During the tests

- ``$EMBUDGET_DATA`` points at an empty directory;
- a dataset that resolves outside the repository and the temporary directories, or a name of a
  dataset that is not shipped (``lastfm``, ``ml-100k``, ``yelp2018``), raises
  :class:`OutsideDataError` instead of loading;
- opening any file under the repository's sibling ``shared/`` folder, or under any other
  shared data folder outside the test's temporary directory, raises the same error (an audit
  hook on ``open``, so it also catches reads that bypass ``load_dataset``).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from embudget.data import load as data_load
from embudget.errors import DataFormatError

REPO = Path(__file__).resolve().parents[1]
#: The data folder some checkouts have next to the repository; tests never read it.
SIBLING_SHARED = REPO.parent / "shared"


class OutsideDataError(AssertionError):
    """A test touched data outside the repository; it would fail in a bare clone."""


class _Guard:
    """State of the data guard (audit hooks cannot be removed, only switched off)."""

    on = False
    forbidden: tuple[str, ...] = ()  # path prefixes (with a trailing separator)
    allowed: tuple[str, ...] = ()  # roots a dataset may come from
    basetemp = ""


def _prefix(p: Path | str) -> str:
    return os.path.join(os.path.abspath(p), "")


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path.startswith(r) for r in roots)


def forbidden_path(path: str | os.PathLike[str]) -> bool:
    """Whether reading ``path`` is outside what a test may read (see the module docstring)."""
    p = _prefix(os.fspath(path))
    if _under(p, _Guard.forbidden):
        return True
    marker = os.path.join("", "shared", "data", "")
    return marker in p and not p.startswith(_Guard.basetemp)


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _Guard.on or event != "open":
        return
    path = args[0]
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if isinstance(path, str | os.PathLike) and forbidden_path(path):
        raise OutsideDataError(
            f"a test opened {os.fspath(path)!r}, outside the repository; tests may use only "
            "the shipped datasets (gowalla, gowalla-mini) and files under tests/"
        )


sys.addaudithook(_audit)

_resolve = data_load.resolve_dataset


def _guarded_resolve(name_or_path: str | Path) -> tuple[str, Path]:
    named = (
        isinstance(name_or_path, str)
        and name_or_path in data_load.KNOWN_DATASETS
        and name_or_path not in data_load.SHIPPED_DATASETS
    )
    try:
        name, path = _resolve(name_or_path)
    except DataFormatError as e:
        if named:
            raise OutsideDataError(
                f"dataset {name_or_path!r} is not shipped with the package; tests use "
                "gowalla-mini (or a fixture under tests/fixtures)"
            ) from e
        raise
    p = _prefix(path)
    if forbidden_path(path) or not _under(p, _Guard.allowed):
        raise OutsideDataError(
            f"dataset {name_or_path!r} resolved to {path}, outside the repository and the "
            "temporary directories; tests use gowalla-mini (or a fixture under tests/fixtures)"
        )
    return name, path


@pytest.fixture(scope="session", autouse=True)
def _single_thread() -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session", autouse=True)
def _no_outside_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    empty = tmp_path_factory.mktemp("no-data")
    basetemp = tmp_path_factory.getbasetemp()
    _Guard.forbidden = tuple({_prefix(SIBLING_SHARED), _prefix(SIBLING_SHARED.resolve())})
    _Guard.allowed = (_prefix(REPO), _prefix(basetemp), _prefix(Path(tempfile.gettempdir())))
    _Guard.basetemp = _prefix(basetemp)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMBUDGET_DATA", str(empty))
        mp.setattr(data_load, "resolve_dataset", _guarded_resolve)
        _Guard.on = True
        try:
            yield
        finally:
            _Guard.on = False
