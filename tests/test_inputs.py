"""Untrusted input ends in a typed error: OS errors (one mapping, exit 2 with the path and the
reason), readers with bounded memory, config ranges, and the files a run leaves readable and
durable."""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import shutil
import stat
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from embudget import io as eio
from embudget.cli import COMMANDS, main
from embudget.config import RunConfig, load_config
from embudget.config.validate import check_for_dataset
from embudget.data import load_dataset, raw, read_csv, read_lastfm, read_lightgcn, read_recbole
from embudget.errors import ConfigError, DataFormatError, FileAccessError, from_os_error

FIXTURES = Path(__file__).parent / "fixtures" / "formats"
MINI = Path(__file__).resolve().parents[1] / "src" / "embudget" / "datasets" / "gowalla-mini"


def one_error_line(err: str) -> str:
    """The single ``error: ...`` line of a failed command (no traceback)."""
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# --- OS errors: one mapping ---------------------------------------------------------------

OS_CASES = [
    (PermissionError(errno.EACCES, "Permission denied", "/srv/data/train.txt"), "permission"),
    (PermissionError(errno.EPERM, "Operation not permitted", "/srv/lock"), "not permitted"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/run"), "read-only"),
    (OSError(errno.ENOSPC, "No space left on device", "/full/run/x"), "no space left"),
    (OSError(errno.EDQUOT, "Disk quota exceeded", "/home/u/run"), "quota"),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/a/file/run"), "not a directory"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/a/dir"), "is a directory"),
    (OSError(errno.ELOOP, "Too many levels of symbolic links", "/a/loop"), "symbolic links"),
    (OSError(errno.EIO, "Input/output error", "/dev/sdz"), "input/output"),
    (OSError(12345, "Something new", "/a/b"), "something new"),
]


@pytest.mark.parametrize(("err", "words"), OS_CASES)
def test_os_errors_map_to_one_typed_error(err: OSError, words: str) -> None:
    typed = from_os_error(err)
    assert isinstance(typed, FileAccessError)
    assert typed.path == err.filename and typed.errno == err.errno
    assert str(typed).startswith(f"{err.filename}: ") and words in str(typed).lower()
    assert from_os_error(err, "/other").path == "/other"


@pytest.mark.parametrize(("err", "words"), OS_CASES)
def test_cli_turns_any_os_error_into_exit_2(
    err: OSError, words: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(_args: Any) -> int:
        raise err

    monkeypatch.setitem(COMMANDS, "data stats", fail)
    assert main(["data", "stats", "gowalla-mini"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(err.filename) in line and words in line.lower()


def test_out_under_a_regular_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "run"
    assert main(["train", "--dataset", "gowalla-mini", "--out", str(out), "--no-progress"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(out) in line and "not a directory" in line


@pytest.mark.parametrize("out", ["/proc/embudget-run", "/proc/version/run"])
def test_out_under_proc(out: str, capsys: pytest.CaptureFixture[str]) -> None:
    if not Path("/proc/version").exists():
        pytest.skip("no /proc")
    assert main(["train", "--dataset", "gowalla-mini", "--out", out, "--no-progress"]) == 2
    assert out in one_error_line(capsys.readouterr().err)


def test_write_onto_a_directory(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(FileAccessError, match="is a directory") as e:
        eio.write_text(tmp_path / "d", "x")
    assert e.value.path == str(tmp_path / "d")
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no temporary file left


def test_write_under_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileAccessError, match="not a directory"):
        eio.write_json(tmp_path / "f" / "x.json", {})


@pytest.mark.parametrize(
    ("where", "code"),
    [("replace", errno.ENOSPC), ("fsync", errno.ENOSPC), ("mkstemp", errno.EROFS),
     ("replace", errno.EACCES)],
)  # fmt: skip
def test_full_read_only_or_denied_writes_are_typed_and_leave_nothing(
    where: str, code: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*_a: Any, **_k: Any) -> Any:
        raise OSError(code, os.strerror(code))

    target = tmp_path / "results.json"
    target.write_text("old")
    if where == "mkstemp":
        monkeypatch.setattr(eio.tempfile, "mkstemp", fail)
    else:
        monkeypatch.setattr(eio.os, where, fail)
    with pytest.raises(FileAccessError) as e:
        eio.write_json(target, {"a": 1})
    assert e.value.path == str(target) and e.value.errno == code
    monkeypatch.undo()
    assert target.read_text() == "old"  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_append_to_a_denied_log_is_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(*_a: Any, **_k: Any) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(eio, "open", denied, raising=False)
    with pytest.raises(FileAccessError, match="permission denied"):
        eio.append_jsonl(tmp_path / "h.jsonl", {"a": 1})


def test_lock_file_of_another_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lock = tmp_path / ".lock"

    def denied(path: Any, *_a: Any, **_k: Any) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(eio, "open", denied, raising=False)

    def locked(_args: Any) -> int:
        with eio.file_lock(lock):
            return 0

    monkeypatch.setitem(COMMANDS, "data stats", locked)
    assert main(["data", "stats", "x"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(lock) in line and "permission denied" in line


def test_cli_disk_full_during_a_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def full(*_a: Any, **_k: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(eio.os, "fsync", full)
    out = tmp_path / "run"
    assert main(["train", "--dataset", "gowalla-mini", "--out", str(out), "--no-progress"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "no space left on device" in line and str(out) in line


def test_unreadable_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "train.txt"
    f.write_text("0 1 2\n1 2\n")
    real_open = open

    def denied(path: Any, *a: Any, **k: Any) -> Any:
        if Path(path) == f:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(raw, "open", denied, raising=False)
    with pytest.raises(FileAccessError, match="permission denied") as e:
        read_lightgcn(f)
    assert e.value.path == str(f)
    assert main(["data", "stats", str(f)]) == 2
    assert str(f) in one_error_line(capsys.readouterr().err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file whatever its mode")
def test_unreadable_input_by_mode(tmp_path: Path) -> None:
    f = tmp_path / "train.txt"
    f.write_text("0 1 2\n")
    f.chmod(0)
    with pytest.raises(FileAccessError, match="permission denied"):
        read_lightgcn(f)


# --- what a path is -----------------------------------------------------------------------


def test_fifo_device_and_directory_refused_by_what_they_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "train.txt"
    os.mkfifo(fifo)
    cases = [(fifo, "FIFO"), (tmp_path, "directory")]
    if Path("/dev/null").exists() and stat.S_ISCHR(os.stat("/dev/null").st_mode):
        cases.append((Path("/dev/null"), "character device"))
    for path, kind in cases:
        with pytest.raises(DataFormatError, match=kind):
            raw.read_text(path)
    # through the command line (a folder is read as a dataset folder; /dev is outside the
    # data the tests may load)
    assert main(["data", "stats", str(fifo)]) == 2
    assert "FIFO" in one_error_line(capsys.readouterr().err)
    # a FIFO inside a dataset folder is refused by kind too, not reported missing
    (tmp_path / "test.txt").write_text("0 1\n")
    with pytest.raises(DataFormatError, match="FIFO"):
        load_dataset(tmp_path)


def test_missing_file_is_still_not_found(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="not found"):
        raw.read_text(tmp_path / "nope.txt")


# --- bounded readers ----------------------------------------------------------------------


def peak_bytes(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        with pytest.raises((DataFormatError, ConfigError)):
            fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_gzip_bomb_stops_at_the_ratio_bound(tmp_path: Path) -> None:
    f = tmp_path / "train.txt.gz"
    f.write_bytes(gzip.compress(b"0 1 2 3\n" * (64 * 2**20 // 8), compresslevel=9))
    size = f.stat().st_size
    limit = raw.gzip_limit(size)
    assert limit == max(raw.GZIP_MIN_LIMIT, raw.GZIP_MAX_RATIO * size) < 64 * 2**20
    peak = peak_bytes(lambda: read_lightgcn(f))
    assert peak < 3 * limit + 2**20  # never the 64 MiB of the content
    with pytest.raises(DataFormatError, match="expands past"):
        read_lightgcn(f)


def test_genuine_gzip_within_the_bound(tmp_path: Path) -> None:
    data = (MINI / "train.txt.gz").read_bytes()
    assert len(gzip.decompress(data)) <= raw.gzip_limit(len(data))
    assert len(read_lightgcn(MINI / "train.txt.gz")) > 10000


def test_ten_megabyte_field_is_refused_with_line_and_column(tmp_path: Path) -> None:
    f = tmp_path / "big.csv"
    rows = [f"u{i},i{i % 7}" for i in range(2000)]
    rows[1500] = "x" * 10_000_000 + ",i1"
    f.write_text("user_id,item_id\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataFormatError, match=r"line 1502: field in column 1 \('user_id'\)"):
        read_csv(f)
    assert peak_bytes(lambda: read_csv(f)) < 200 * 2**20  # numpy never sees the field


def test_long_ids_are_bounded_but_long_enough(tmp_path: Path) -> None:
    f = tmp_path / "ids.tsv"
    ok = "a" * raw.ID_MAX_CHARS
    f.write_text(f"user\titem\n{ok}\tb\n")
    assert read_csv(f).users[0] == ok
    f.write_text(f"user\titem\nu\t{ok}x\n")
    with pytest.raises(DataFormatError, match="line 2: field in column 2"):
        read_csv(f)


def test_long_numeric_field_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "r.inter"
    f.write_text(f"user_id:token\titem_id:token\trating:float\n1\t2\t{'9' * 5000}\n")
    with pytest.raises(DataFormatError, match="field in column 3"):
        read_recbole(f)


@pytest.mark.parametrize("tok", [str(2**63), str(-(2**63) - 1), "9" * 30, "9" * 100_000])
def test_ids_out_of_int64_range(tok: str, tmp_path: Path) -> None:
    lastfm = tmp_path / "data1.txt"
    lastfm.write_text(f"1\t2\t3\n{tok}\t2\t1\n")
    too_big = r"line 2: (user .* does not fit in int64|field in column 1 is 100,000)"
    with pytest.raises(DataFormatError, match=too_big) as e:
        read_lastfm(lastfm)
    assert len(str(e.value)) < 300  # a huge token is cut in the message
    lg = tmp_path / "train.txt"
    lg.write_text(f"0 1 2\n1 {tok}\n")
    with pytest.raises(DataFormatError, match="line 2: id .* does not fit in int64"):
        read_lightgcn(lg)


def test_largest_int64_id_is_accepted(tmp_path: Path) -> None:
    f = tmp_path / "data1.txt"
    f.write_text(f"1\t2\t3\n{2**63 - 1}\t2\t1\n")
    assert int(read_lastfm(f).users.max()) == 2**63 - 1


@pytest.mark.parametrize(
    ("name", "head", "reader"),
    [
        ("r.csv", "user_id,item_id,rating", read_csv),
        ("r.tsv", "user\titem", read_csv),
        ("r.inter", "user_id:token\titem_id:token", read_recbole),
    ],
)
def test_utf8_bom_in_header(name: str, head: str, reader: Any, tmp_path: Path) -> None:
    body = "\n".join(["\t".join(["1", "2", "3"][: head.count("\t") + 1])] * 2)
    if "," in head:
        body = "1,2,4\n1,3,5"
    data = ("\ufeff" + head + "\n" + body + "\n").encode("utf-8")
    f = tmp_path / name
    f.write_bytes(data)
    r = reader(f)
    assert len(r) == 2 and r.users.tolist() == [1, 1]
    assert r.sha256 == hashlib.sha256(data).hexdigest()  # the file's bytes, BOM included


def test_bom_in_lightgcn_text(tmp_path: Path) -> None:
    f = tmp_path / "train.txt"
    f.write_bytes("\ufeff0 1 2\n1 2\n".encode())
    assert read_lightgcn(f).users.tolist() == [0, 0, 1]


# --- config ranges ------------------------------------------------------------------------

BAD_SETTINGS = [
    ("threads=-1", "threads"),
    ("threads=0", "threads"),
    ("threads=100000", "threads"),
    ("seed=-1", "seed"),
    (f"seed={2**64}", "seed"),
    ("data.split_seed=-1", "data.split_seed"),
    ("data.name=''", "data.name"),
    ("data.name='  '", "data.name"),
    ("data.min_rating=.nan", "data.min_rating"),
    ("model.d_max=40000", "model.d_max"),
    ("model.d_max=0", "model.d_max"),
    ("model.n_layers=-1", "model.n_layers"),
    ("model.n_layers=1000000", "model.n_layers"),
    ("model.reg=-0.1", "model.reg"),
    ("model.node_dropout=1.0", "model.node_dropout"),
    ("model.mess_dropout=-0.5", "model.mess_dropout"),
    ("train.lr=-1", "train.lr"),
    ("train.lr=0", "train.lr"),
    ("train.lr=.nan", "train.lr"),
    ("train.lr=.inf", "train.lr"),
    ("train.lr_min=0", "train.lr_min"),
    ("train.lr_decay=0", "train.lr_decay"),
    ("train.lr_decay=1.5", "train.lr_decay"),
    ("train.patience=0", "train.patience"),
    ("train.eval_every_epochs=0", "train.eval_every_epochs"),
    ("train.eval_every_epochs=-40", "train.eval_every_epochs"),
    ("train.eval_user_fraction=0", "train.eval_user_fraction"),
    ("train.batch_users=0", "train.batch_users"),
    ("eval.ks=[100000]", "eval.ks"),
    ("eval.ks=[0]", "eval.ks"),
    ("eval.ks=[]", "eval.ks"),
    ("eval.batch_users=0", "eval.batch_users"),
    ("budget.sparsity=.nan", "budget.sparsity"),
    ("search.probe.lr=-0.03", "search.probe.lr"),
    ("search.probe.lr_decay=2", "search.probe.lr_decay"),
    ("search.probe.user_fraction=1.5", "search.probe.user_fraction"),
    ("search.predictor.updates=0", "search.predictor.updates"),
    ("search.retrain.patience=0", "search.retrain.patience"),
    ("search.pretrain.nested_kept_min=0", "search.pretrain.nested_kept_min"),
    ("cache_dir=''", "cache_dir"),
]


@pytest.mark.parametrize(("setting", "key"), BAD_SETTINGS)
def test_every_numeric_setting_has_a_range(setting: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(overrides=[setting], fast=False)


@pytest.mark.parametrize(
    "setting",
    ["threads=1", "threads=null", f"model.d_max={2**15 - 1}", "train.lr_decay=1",
     "eval.ks=[1000]", "seed=0", "model.n_layers=0", "model.node_dropout=0"],
)  # fmt: skip
def test_edges_of_the_ranges_are_accepted(setting: str) -> None:
    load_config(overrides=[setting], fast=False)


def test_shipped_presets_pass_the_ranges() -> None:
    for model in ("mf", "ncf", "ngcf", "lightgcn"):
        for fast in (False, True):
            load_config(updates={"model": {"name": model}}, fast=fast)


def test_cut_offs_bounded_by_the_item_count() -> None:
    cfg = load_config(overrides=["eval.ks=[5,1000]"], fast=False)
    with pytest.raises(ConfigError, match="only 993 items"):
        check_for_dataset(cfg, 993)
    check_for_dataset(RunConfig(), 20)


# --- command line: bad arguments end in exit 2 without a traceback ------------------------

BAD_ARGS = [
    ["--set", "threads=-1"],
    ["--seed", "-1"],
    ["--set", "data.split_seed=-1"],
    ["--set", "train.lr=.nan"],
    ["--set", "train.lr=nan"],
    ["--set", "train.lr=-1"],
    ["--set", "eval.ks=[100000]"],
    ["--set", "eval.ks=[994]"],  # more than gowalla-mini's 993 items: refused at run time
    ["--dataset", ""],
    ["--dataset", "   "],
    ["--set", "model.d_max=40000"],
]


@pytest.mark.parametrize("extra", BAD_ARGS, ids=lambda a: " ".join(a) or "empty")
def test_bad_run_arguments_exit_2(
    extra: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--dataset", "gowalla-mini", "--out", str(tmp_path / "r"), "--no-progress"]
    assert main([*argv, "--set", "train.max_steps=1", *extra]) == 2
    one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("name", ["", " "])
def test_empty_dataset_name_never_means_gowalla(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "stats", name]) == 2
    assert "empty dataset name" in one_error_line(capsys.readouterr().err)
    with pytest.raises(DataFormatError, match="empty dataset name"):
        load_dataset(name)


# --- usability: absolute dataset paths, readable and durable outputs ----------------------


@pytest.fixture(scope="module")
def relative_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny train run whose dataset was given as a path relative to the working directory."""
    base = tmp_path_factory.mktemp("rel")
    shutil.copytree(MINI, base / "data" / "mini")
    old = Path.cwd()
    os.chdir(base)
    try:
        settings = ["train.max_steps=2", "train.eval_every_steps=2", "model.d_max=4"]
        argv = ["train", "--dataset", "data/mini", "--out", "run", "--no-progress"]
        assert main([*argv, *(x for s in settings for x in ("--set", s))]) == 0
    finally:
        os.chdir(old)
    return base / "run"


def test_run_records_the_dataset_path_absolute(relative_run: Path, tmp_path: Path) -> None:
    name = yaml.safe_load((relative_run / "config.yaml").read_text())["data"]["name"]
    assert name == str(relative_run.parent / "data" / "mini")
    old = Path.cwd()
    os.chdir(tmp_path)  # export from another directory
    try:
        assert main(["export", str(relative_run), "--out", "t.safetensors"]) == 0
    finally:
        os.chdir(old)
    assert (tmp_path / "t.safetensors").is_file()


def test_export_overwrite_onto_a_directory(
    relative_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "dir.safetensors"
    target.mkdir()
    assert main(["export", str(relative_run), "--out", str(target), "--overwrite"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(target) in line and "is a directory" in line
    assert target.is_dir() and list(tmp_path.iterdir()) == [target]


def test_known_names_stay_names() -> None:
    from embudget.data.load import absolute_dataset_path

    assert absolute_dataset_path("gowalla-mini") == "gowalla-mini"
    assert absolute_dataset_path("no/such/dir") == "no/such/dir"
    assert absolute_dataset_path(str(FIXTURES)) == str(FIXTURES)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_outputs_are_readable_as_the_umask_allows(umask: int, tmp_path: Path) -> None:
    old = os.umask(umask)
    try:
        eio.write_text(tmp_path / "a.txt", "x")
        eio.save_npz(tmp_path / "b.npz", a=np.arange(3))
    finally:
        os.umask(old)
    for name in ("a.txt", "b.npz"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask


def test_atomic_writes_fsync_the_file_and_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("no /proc/self/fd")
    monkeypatch.setattr(eio.os, "fsync", spy)
    eio.write_text(tmp_path / "a.txt", "x")
    assert len(synced) == 2
    assert Path(synced[0]).name.startswith(".a.txt.")  # the file, before the rename
    assert synced[1] == str(tmp_path)  # then its directory


@pytest.mark.parametrize("seed", ["-1", str(2**63)])
def test_bad_split_seed_of_data_stats(seed: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "stats", "gowalla-mini", "--split-seed", seed]) == 2
    assert "split_seed" in one_error_line(capsys.readouterr().err)


def test_binary_checksum_file_is_a_data_error(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "lightgcn", tmp_path / "d")
    (tmp_path / "d" / "SHA256SUMS").write_bytes(b"\xff\xfe\x00garbage\n")
    with pytest.raises(DataFormatError, match="SHA256SUMS.*UTF-8"):
        load_dataset(tmp_path / "d")


def test_checkpoint_on_a_full_disk_is_typed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch's own file writer reports ENOSPC as a RuntimeError; save_torch writes the bytes
    itself, so a full disk is the typed error."""
    import torch

    def full(self: Path, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(FileAccessError, match="no space left"):
        eio.save_torch(tmp_path / "c.pt", {"a": torch.zeros(3)})
    monkeypatch.undo()
    eio.save_torch(tmp_path / "c.pt", {"a": torch.zeros(3)})
    assert eio.load_torch(tmp_path / "c.pt")["a"].tolist() == [0.0, 0.0, 0.0]


def test_a_config_file_that_is_not_utf8_or_is_a_directory_is_a_config_error(
    tmp_path: Path,
) -> None:
    from embudget.config import load_config

    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"train:\n  lr: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config([bad], fast=False)
    with pytest.raises(ConfigError, match="is a directory"):
        load_config([tmp_path], fast=False)


@pytest.mark.parametrize(
    "setting",
    ["budget.sparsity=1.5", "budget.sparsity=-0.1", "budget.sparsity=1.0", "device=tpu"],
)
def test_out_of_range_budget_and_unknown_devices_are_config_errors(setting: str) -> None:
    with pytest.raises(ConfigError):
        load_config(overrides=[setting])


def test_kept_fraction_out_of_range_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="kept_fraction"):
        load_config(overrides=["budget.sparsity=null", "budget.kept_fraction=1.5"])


def test_negative_lastfm_ids_are_refused_like_lightgcn_ones(tmp_path: Path) -> None:
    f = tmp_path / "data1.txt"
    f.write_text("1\t2\t5\n-10\t3\t1\n")
    with pytest.raises(DataFormatError, match="negative user id -10"):
        read_lastfm(f)
