"""The test-wide data guard (tests/conftest.py): only data inside the repository is readable."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from conftest import REPO, SIBLING_SHARED, OutsideDataError
from embudget.cli import main
from embudget.data import load_dataset
from embudget.data.load import data_search_path

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "formats"


@pytest.mark.parametrize("name", ["lastfm", "ml-100k", "yelp2018"])
def test_unshipped_datasets_are_an_error(name: str) -> None:
    with pytest.raises(OutsideDataError, match=name):
        load_dataset(name)


def test_the_cli_cannot_reach_them_either() -> None:
    with pytest.raises(OutsideDataError, match="lastfm"):
        main(["data", "stats", "lastfm"])


def test_opening_a_file_in_the_sibling_shared_folder_is_an_error() -> None:
    # raised by the audit hook before the file system is asked: whether or not the file exists
    for rel in ("data/lastfm/data1.txt", "data/SHA256SUMS", "spec/bet.md"):
        with pytest.raises(OutsideDataError, match="outside the repository"):
            open(SIBLING_SHARED / rel, "rb")
        with pytest.raises(OutsideDataError):
            os.open(SIBLING_SHARED / rel, os.O_RDONLY)


def test_any_shared_data_folder_outside_the_test_tmp_dir_is_an_error(tmp_path: Path) -> None:
    outside = Path(tempfile.gettempdir()) / "elsewhere" / "shared" / "data" / "x" / "train.txt"
    with pytest.raises(OutsideDataError):
        outside.read_text()
    inside = tmp_path / "shared" / "data" / "x" / "train.txt"  # the test's own files are fine
    inside.parent.mkdir(parents=True)
    inside.write_text("0 1\n")
    assert inside.read_text() == "0 1\n"


def test_the_data_folder_variable_points_at_an_empty_directory() -> None:
    env = os.environ["EMBUDGET_DATA"]
    assert Path(env).is_dir() and not any(Path(env).iterdir())
    assert data_search_path()[0] == Path(env)


def test_shipped_and_test_local_data_still_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_dataset("gowalla-mini").n_users == 800
    assert load_dataset(FIX / "lightgcn").n_interactions == 12
    # a known name found in a folder the test made itself is allowed
    shutil.copytree(FIX / "lastfm", tmp_path / "lastfm")
    monkeypatch.setenv("EMBUDGET_DATA", str(tmp_path))
    assert load_dataset("lastfm", protocol="standard").user_ids.tolist() == [1, 2, 4, 5]


def test_a_dataset_path_outside_the_repository_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # /usr is neither the repository nor a temporary directory
    assert not str(Path("/usr").resolve()).startswith(str(REPO))
    with pytest.raises(OutsideDataError, match="outside the repository"):
        load_dataset(Path("/usr"))
