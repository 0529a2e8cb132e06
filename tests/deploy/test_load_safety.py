"""`embudget.load` and `embudget recommend` on files embudget did not write.

Every malformed, truncated, bit-flipped or crafted export must end in :class:`ExportError` (never
another exception type), and a small file that claims huge tensors or sizes must fail fast with
little memory. The valid files are exports of a tiny gowalla-mini run (built once per module).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file, save_file

from embudget.cli import main
from embudget.config import load_config
from embudget.deploy.export import export_run
from embudget.deploy.formats import checksum, load
from embudget.errors import ExportError
from embudget.pipeline import run as loop

RUN_SETTINGS = [
    "data.name=gowalla-mini",
    "model.name=lightgcn",
    "model.n_layers=1",
    "model.d_max=8",
    "train.batch_users=1000",
    "train.eval_every_steps=5",
    "train.patience=1",
    "train.max_steps=5",
    "search.method=su",
    "budget.sparsity=0.5",
]
FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
Mutate = Callable[[dict[str, np.ndarray], dict[str, Any]], None]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("safety")
    cfg = load_config(overrides=[*RUN_SETTINGS, f"cache_dir={base / 'cache'}"], fast=False)
    loop.run_search(cfg, base / "run", progress=False)
    out = {}
    for label, fmt, dtype in [
        ("st", "safetensors", "fp32"),
        ("npz", "npz", "fp32"),
        ("buckets", "buckets", "int8"),
    ]:
        out[label] = base / f"{label}.export"
        export_run(base / "run", out[label], fmt=fmt, dtype=dtype, with_history=True)
    # the layout without interaction history (graph backbones always carry theirs: MF here)
    plain = [s for s in RUN_SETTINGS if not s.startswith("model.")] + ["model.name=mf"]
    cfg = load_config(
        overrides=[*plain, "model.d_max=8", f"cache_dir={base / 'cache'}"], fast=False
    )
    loop.run_search(cfg, base / "mf-run", progress=False)
    out["plain"] = base / "plain.export"
    export_run(base / "mf-run", out["plain"])
    return out


def expect_export_error(path: Path) -> ExportError:
    try:
        load(path)
    except ExportError as e:
        return e
    raise AssertionError(f"{path} loaded without error")


def load_or_export_error(path: Path) -> None:
    """Loads, or raises ExportError: any other exception fails the test."""
    try:
        load(path)
    except ExportError:
        pass


def rewrite(src: Path, dst: Path, mutate: Mutate, fix_checksum: bool = True) -> Path:
    """A copy of a safetensors export with tensors and metadata changed (checksum recomputed, so
    that the check under test is reached)."""
    tensors = load_file(str(src))
    from safetensors import safe_open

    with safe_open(str(src), framework="np") as f:
        meta = json.loads((f.metadata() or {})["embudget"])
    mutate(tensors, meta)
    if fix_checksum and isinstance(meta, dict):
        covered = meta if meta.get("format_version") == 2 else None
        meta["sha256"] = checksum(tensors, covered)
    save_file(tensors, str(dst), metadata={"embudget": json.dumps(meta)})
    return dst


def raw_safetensors(dst: Path, header: Any, data: bytes = b"", length: int | None = None) -> Path:
    blob = json.dumps(header).encode()
    n = len(blob) if length is None else length
    dst.write_bytes(struct.pack("<Q", n) + blob + data)
    return dst


def st_header(path: Path) -> tuple[dict[str, Any], bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


# --------------------------------------------------------------------------------------------
# valid files load; every kind of damage is an ExportError
# --------------------------------------------------------------------------------------------
def test_valid_exports_load(files: dict[str, Path]) -> None:
    for path in files.values():
        ex = load(path)
        assert ex.user_ids.size == 800 and ex.item_ids.size == 993


@FUZZ
@given(
    data=st.binary(max_size=2048), prefix=st.sampled_from([b"", b"PK\x03\x04", b"\x10" + 7 * b"\0"])
)
def test_random_bytes(tmp_path: Path, data: bytes, prefix: bytes) -> None:
    p = tmp_path / "rand"
    p.write_bytes(prefix + data)
    expect_export_error(p)


@pytest.mark.parametrize("label", ["st", "npz", "buckets", "plain"])
def test_every_truncation_of_the_header_and_a_sample_of_the_data(
    files: dict[str, Path], tmp_path: Path, label: str
) -> None:
    blob = files[label].read_bytes()
    head = 8 + struct.unpack("<Q", blob[:8])[0] if label in ("st", "plain") else 4096
    n = len(blob)
    cuts = [*range(0, min(head + 64, n)), *range(head, n, 97), *range(n - 64, n)]
    p = tmp_path / "cut"
    p.write_bytes(blob)
    for cut in sorted(set(cuts), reverse=True):  # truncating in place: no copy per cut
        os.truncate(p, cut)
        expect_export_error(p)


@FUZZ
@given(
    pos=st.floats(0, 1, exclude_max=True),
    bit=st.integers(0, 7),
    label=st.sampled_from(["st", "npz", "buckets"]),
)
def test_bit_flips(
    files: dict[str, Path], tmp_path: Path, pos: float, bit: int, label: str
) -> None:
    blob = bytearray(files[label].read_bytes())
    blob[int(pos * len(blob))] ^= 1 << bit
    p = tmp_path / "flip"
    p.write_bytes(bytes(blob))
    load_or_export_error(p)  # a flip in free text (e.g. the version string) may still load


@FUZZ
@given(pos=st.integers(0, 4000), bit=st.integers(0, 7))
def test_bit_flips_in_the_header(
    files: dict[str, Path], tmp_path: Path, pos: int, bit: int
) -> None:
    blob = bytearray(files["st"].read_bytes())
    blob[pos] ^= 1 << bit
    p = tmp_path / "flip"
    p.write_bytes(bytes(blob))
    load_or_export_error(p)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=6,
)
META_PATHS = [
    ("format",),
    ("format_version",),
    ("layout",),
    ("dtype",),
    ("n_users",),
    ("n_items",),
    ("model",),
    ("model", "name"),
    ("model", "d_max"),
    ("model", "options"),
    ("model", "options", "n_layers"),
    ("tables",),
    ("tables", "user"),
    ("ids",),
    ("ids", "item"),
    ("sha256",),
]


@FUZZ
@given(where=st.sampled_from(META_PATHS), value=JSON, fix=st.booleans())
def test_crafted_metadata_fields(
    files: dict[str, Path], tmp_path: Path, where: tuple[str, ...], value: Any, fix: bool
) -> None:
    def mutate(_t: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        node = meta
        for k in where[:-1]:
            node = node[k]
        node[where[-1]] = value

    load_or_export_error(rewrite(files["st"], tmp_path / "m", mutate, fix_checksum=fix))


TENSOR_RECORD = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(["F32", "F16", "I64", "I32", "I16", "U8", "BF16", "X", 3]),
        "shape": st.lists(st.integers(-1, 2**40), max_size=3) | JSON,
        "data_offsets": st.lists(st.integers(-1, 2**40), min_size=0, max_size=3) | JSON,
    }
)


@FUZZ
@given(
    name=st.sampled_from(["sizes.user", "emb.user_emb.values", "train.indptr", "extra"]),
    record=TENSOR_RECORD,
)
def test_crafted_tensor_headers(
    files: dict[str, Path], tmp_path: Path, name: str, record: dict[str, Any]
) -> None:
    header, data = st_header(files["st"])
    header[name] = record
    expect_export_error(raw_safetensors(tmp_path / "h", header, data))


@FUZZ
@given(data=st.data(), label=st.sampled_from(["st", "buckets"]), fix=st.booleans())
def test_crafted_tensor_contents(
    files: dict[str, Path], tmp_path: Path, data: st.DataObject, label: str, fix: bool
) -> None:
    """Random values written into a random tensor (checksum recomputed or not)."""
    names = sorted(load_file(str(files[label])))
    name = data.draw(st.sampled_from(names))
    big = st.integers(-(2**40), 2**40) | st.integers(-3, 1000)
    value = data.draw(big if name.split(".")[0] != "emb" else st.floats(allow_nan=True) | big)
    where = data.draw(st.sampled_from(["first", "last", "all", "half"]))

    def mutate(t: dict[str, np.ndarray], _m: dict[str, Any]) -> None:
        a = t[name].copy().reshape(-1)
        info = np.iinfo(a.dtype) if a.dtype.kind in "iu" else np.finfo(a.dtype)
        if not np.isfinite(value):
            v = value if a.dtype.kind == "f" else 0
        else:
            v = np.clip(value, info.min, info.max)
        part = {"first": slice(0, 1), "last": slice(-1, None), "all": slice(None)}
        a[part.get(where, slice(0, a.size // 2))] = v
        t[name] = a.reshape(t[name].shape)

    load_or_export_error(rewrite(files[label], tmp_path / "v", mutate, fix_checksum=fix))


# --------------------------------------------------------------------------------------------
# explicit cases
# --------------------------------------------------------------------------------------------
def _set(*path: str, value: Any) -> Mutate:
    def mutate(_t: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        node = meta
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value

    return mutate


def _tensor(name: str, fn: Callable[[np.ndarray], np.ndarray]) -> Mutate:
    def mutate(t: dict[str, np.ndarray], _m: dict[str, Any]) -> None:
        t[name] = fn(t[name].copy())

    return mutate


def _dup_ids(t: dict[str, np.ndarray], _m: dict[str, Any]) -> None:
    ids = t["ids.user"].copy()
    ids[1] = ids[0]
    t["ids.user"] = ids


def _nan(a: np.ndarray) -> np.ndarray:
    a[7] = np.nan
    return a


def _poke(a: np.ndarray, i: int, v: int) -> np.ndarray:
    a[i] = v
    return a


CASES: dict[str, tuple[Mutate, str]] = {
    "format_version string": (_set("format_version", value="abc"), "format_version"),
    "format_version null": (_set("format_version", value=None), "format_version"),
    "format_version newer": (_set("format_version", value=99), "upgrade embudget"),
    "n_users null": (_set("n_users", value=None), "n_users"),
    "n_users too large": (_set("n_users", value=801), "sizes.user"),
    "options a list": (_set("model", "options", value=[1, 2]), "model.options"),
    "unknown option": (_set("model", "options", "depth", value=3), "backbone"),
    "d_max 2^30": (_set("model", "d_max", value=2**30), "d_max"),
    "d_max 2^26": (_set("model", "d_max", value=2**26), "d_max"),
    "d_max below the sizes": (_set("model", "d_max", value=2), "sizes"),
    "n_layers 10^6": (_set("model", "options", "n_layers", value=10**6), "n_layers"),
    "unknown model": (_set("model", "name", value="bert"), "model.name"),
    "tables renamed": (_set("tables", "user", value=["user_table"]), "emb.user_table"),
    "layout unknown": (_set("layout", value="dense"), "layout"),
    "indptr wrong length": (_tensor("train.indptr", lambda a: a[:-1]), "train.indptr"),
    "indptr not monotone": (_tensor("train.indptr", lambda a: _poke(a, 5, a[7] + 1)), "indptr"),
    "indptr past indices": (_tensor("history.indptr", lambda a: a + 1), "history.indptr"),
    "history index out of range": (
        _tensor("history.indices", lambda a: _poke(a, 3, 5000)),
        "history.indices",
    ),
    "history indices negative": (_tensor("history.indices", lambda a: -a - 1), "history.indices"),
    "duplicate raw ids": (_dup_ids, "not unique"),
    "sizes out of range": (_tensor("sizes.item", lambda a: _poke(a, 0, 0)), "sizes"),
    "NaN in a table": (_tensor("emb.user_emb.values", lambda a: _nan(a)), "NaN"),
    "offsets wrong": (_tensor("offsets.user", lambda a: _poke(a, 1, a[1] + 1)), "offsets"),
    "extra tensor": (_tensor("sizes.user", lambda a: a), ""),  # replaced below
}


def _extra(t: dict[str, np.ndarray], _m: dict[str, Any]) -> None:
    t["extra.payload"] = np.zeros(4, np.float32)


CASES["extra tensor"] = (_extra, "no embudget export has")


def _drop(name: str) -> Mutate:
    def mutate(t: dict[str, np.ndarray], _m: dict[str, Any]) -> None:
        del t[name]

    return mutate


CASES["history flag not a bool"] = (_set("history", value="yes"), "history must be true")
CASES["graph model without history"] = (_set("history", value=False), "training graph")
CASES["history tensors partly absent"] = (_drop("history.indices"), "history.indices")

#: the same checks on the layout without history (an MF export)
PLAIN_CASES: dict[str, tuple[Mutate, str]] = {
    "history tensors without the flag": (
        _tensor("sizes.user", lambda a: a),  # replaced below
        "no embudget export has",
    ),
    "flag without the history tensors": (_set("history", value=True), "train.indptr"),
    "history flag not a bool": (_set("history", value=1), "history must be true"),
}


def _add_history(t: dict[str, np.ndarray], m: dict[str, Any]) -> None:
    t["train.indptr"] = np.zeros(m["n_users"] + 1, np.int64)
    t["train.indices"] = np.zeros(0, np.int32)


PLAIN_CASES["history tensors without the flag"] = (_add_history, "no embudget export has")


@pytest.mark.parametrize("case", sorted(PLAIN_CASES))
def test_crafted_layout_without_history(files: dict[str, Path], tmp_path: Path, case: str) -> None:
    mutate, words = PLAIN_CASES[case]
    err = expect_export_error(rewrite(files["plain"], tmp_path / "c", mutate))
    assert words in str(err)


@pytest.mark.parametrize("case", sorted(CASES))
def test_crafted_metadata_and_tensors(files: dict[str, Path], tmp_path: Path, case: str) -> None:
    mutate, words = CASES[case]
    err = expect_export_error(rewrite(files["st"], tmp_path / "c", mutate))
    assert words in str(err)


def test_metadata_that_is_not_an_object(files: dict[str, Path], tmp_path: Path) -> None:
    header, data = st_header(files["st"])
    for value in ("[1, 2]", '"a string"', "null", "3", "{", "\xff"):
        header["__metadata__"] = {"embudget": value}
        expect_export_error(raw_safetensors(tmp_path / "m", header, data))
    header["__metadata__"] = {"embudget": 5}
    expect_export_error(raw_safetensors(tmp_path / "m", header, data))


def test_checksum_mismatch(files: dict[str, Path], tmp_path: Path) -> None:
    mutate = _tensor("emb.user_emb.values", lambda a: a + 1)
    err = expect_export_error(rewrite(files["st"], tmp_path / "c", mutate, fix_checksum=False))
    assert "checksum" in str(err)


def test_container_level_cases(files: dict[str, Path], tmp_path: Path) -> None:
    header, data = st_header(files["st"])
    expect_export_error(raw_safetensors(tmp_path / "a", header, data, length=2**40))  # header len
    expect_export_error(raw_safetensors(tmp_path / "b", header, data[:-1]))  # short data
    h = json.loads(json.dumps(header))
    h["sizes.item"]["data_offsets"] = h["sizes.user"]["data_offsets"]  # overlap
    h["sizes.item"]["shape"] = h["sizes.user"]["shape"]
    assert "overlap" in str(expect_export_error(raw_safetensors(tmp_path / "c", h, data)))
    h = json.loads(json.dumps(header))
    h["sizes.user"]["dtype"] = "I32"
    expect_export_error(raw_safetensors(tmp_path / "d", h, data))
    deep = {"__metadata__": {"embudget": "[" * 100000 + "]" * 100000}}
    expect_export_error(raw_safetensors(tmp_path / "e", deep))
    (tmp_path / "dir").mkdir()
    assert "not a regular file" in str(expect_export_error(tmp_path / "dir"))
    os.mkfifo(tmp_path / "fifo")
    assert "not a regular file" in str(expect_export_error(tmp_path / "fifo"))
    expect_export_error(tmp_path / "missing")


def test_npz_cases(files: dict[str, Path], tmp_path: Path) -> None:
    with np.load(files["npz"], allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    obj = dict(arrays)
    obj["ids.user"] = np.array([object()] * 3, dtype=object)
    np.savez(tmp_path / "obj.npz", **obj)
    assert "object" in str(expect_export_error(tmp_path / "obj.npz"))
    np.savez_compressed(tmp_path / "ok.npz", **arrays)
    assert load(tmp_path / "ok.npz").user_ids.size == 800  # deflated entries are fine
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        for k, v in arrays.items():
            zf.writestr(f"{k}.npy", _npy(v))
        zf.writestr("pad.npy", _npy(np.zeros(2**24, np.uint8)))  # 16 MB of zeros, ~16 KB stored
    assert "claims" in str(expect_export_error(bomb))
    dup = tmp_path / "dup.npz"
    with zipfile.ZipFile(dup, "w") as zf, pytest.warns(UserWarning):
        for k, v in [*arrays.items(), ("sizes.user", arrays["sizes.user"])]:
            zf.writestr(f"{k}.npy", _npy(v))
    assert "twice" in str(expect_export_error(dup))
    no_meta = dict(arrays)
    no_meta.pop("__metadata__")
    np.savez(tmp_path / "nometa.npz", **no_meta)
    assert "without embudget metadata" in str(expect_export_error(tmp_path / "nometa.npz"))


def _npy(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, allow_pickle=False)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# memory: small files that claim huge tensors or sizes fail fast
# --------------------------------------------------------------------------------------------
def test_huge_claims_fail_fast_with_little_memory(files: dict[str, Path], tmp_path: Path) -> None:
    header, data = st_header(files["st"])
    paths: list[Path] = []
    for name, record in [
        ("emb.user_emb.values", {"dtype": "F32", "shape": [750_000_000]}),  # 3 GB, wrong shape
        ("extra", {"dtype": "F32", "shape": [750_000_000]}),  # 3 GB, unknown tensor
        ("sizes.user", {"dtype": "I16", "shape": [1_500_000_000]}),  # 3 GB, wrong length
    ]:
        h = json.loads(json.dumps(header))
        record["data_offsets"] = [len(data), len(data) + 3_000_000_000]
        h[name] = record
        p = raw_safetensors(tmp_path / f"huge-{len(paths)}", h, data)
        with open(p, "r+b") as f:
            f.truncate(os.path.getsize(p) + 3_000_000_000)  # sparse: a few KB on disk
        paths.append(p)
    for i, mutate in enumerate(
        [
            _set("model", "d_max", value=2**30),
            _set("model", "options", "n_layers", value=10**6),
            _set("n_users", value=2**31 - 1),
        ]
    ):
        paths.append(rewrite(files["st"], tmp_path / f"meta-{i}", mutate))
    script = (
        "import resource, sys, time\n"
        "from embudget.errors import ExportError\n"
        "from embudget.deploy.formats import load\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "t0 = time.perf_counter()\n"
        "for p in sys.argv[1:]:\n"
        "    try:\n"
        "        load(p)\n"
        "        print('LOADED', p)\n"
        "    except ExportError:\n"
        "        pass\n"
        "grow = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before\n"
        "print('GROW_KB', grow, 'SECONDS', time.perf_counter() - t0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "LOADED" not in out, out
    grow_kb, seconds = int(out.split()[1]), float(out.split()[3])
    assert grow_kb < 100_000, out  # < 100 MB for files that claim 3 GB or 2^31 rows
    assert seconds < 10, out
    print(out)


# --------------------------------------------------------------------------------------------
# recommend arguments
# --------------------------------------------------------------------------------------------
def test_recommend_bad_arguments(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(files["st"])
    assert main(["recommend", path, "--user", "0", "-k", "3"]) == 0
    capsys.readouterr()
    for user in ["18446744073709551616", "-9223372036854775809", "1" * 5000, "", "x\x00y"]:
        assert main(["recommend", path, "--user", user]) == 2
        err = capsys.readouterr().err
        assert "unknown user id" in err and len(err) < 400
    binary = tmp_path / "users.bin"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 10)
    assert main(["recommend", path, "--users-file", str(binary)]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("# nobody\n")
    assert main(["recommend", path, "--users-file", str(empty)]) == 2
    assert "no user ids" in capsys.readouterr().err
    assert main(["recommend", path, "--users-file", str(tmp_path)]) == 2
    assert main(["recommend", path, "--user", "0", "-k", "0"]) == 2
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf0\n1\n")
    assert main(["recommend", path, "--users-file", str(bom), "-k", "1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_a_flipped_bit_in_the_metadata_fails_the_checksum(
    files: dict[str, Path], tmp_path: Path
) -> None:
    def touch(tensors: dict[str, Any], meta: Any) -> None:
        meta["embudget_version"] = "9.9.9"

    err = expect_export_error(rewrite(files["st"], tmp_path / "m", touch, fix_checksum=False))
    assert "checksum" in str(err)


def test_metadata_naming_another_container_or_a_non_object_memory_is_refused(
    files: dict[str, Path], tmp_path: Path
) -> None:
    def npz(tensors: dict[str, Any], meta: Any) -> None:
        meta["container"] = "npz"

    def memory(tensors: dict[str, Any], meta: Any) -> None:
        meta["memory"] = "x"

    assert "container" in str(expect_export_error(rewrite(files["st"], tmp_path / "a", npz)))
    assert "memory" in str(expect_export_error(rewrite(files["st"], tmp_path / "b", memory)))


def test_format_1_exports_still_load(files: dict[str, Path], tmp_path: Path) -> None:
    def v1(tensors: dict[str, Any], meta: Any) -> None:
        meta["format_version"] = 1

    load(rewrite(files["st"], tmp_path / "v1", v1))  # its checksum covers the tensors only
