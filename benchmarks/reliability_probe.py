"""Black-box reliability probe of the installed ``embudget`` command line.

Every case runs the CLI (or ``python -c "import embudget; embudget.load(...)"``) in a child
process under a 4 GiB address-space cap and records its exit code, whether stderr holds a
Python traceback, the child's peak RSS (``os.wait4``), its wall time and a verdict:

- OK when the command either succeeded correctly or failed with exit 2/3 and a short message
  (no traceback), and stayed under 2 GB peak RSS;
- for damage cases also that the damage was not silently accepted: a resumed run equals an
  uninterrupted one (test metrics, ``sizes.npz``), ``history.jsonl`` has one parseable line
  per iteration, a killed export left no torn file.

Categories (all inputs derived from the shipped ``gowalla-mini``, tiny settings):
malformed datasets × ``data stats``/``train``; bad arguments; crafted export files and
``recommend`` arguments; ``kill -9`` of searches (then ``--resume``) and of exports; damaged run
directories; two ``bench`` processes on one grid; a failed run then its rerun; read-only and
full file systems (tmpfs mounts, needs root; skipped otherwise).

    .venv/bin/python benchmarks/reliability_probe.py --out /tmp/probe [--jobs 2]

Writes ``summary.json`` (every case) under ``--out`` and prints a table per category. Not run
by CI (minutes of wall time, mounts).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import pickle
import random
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv" / "bin"
EMB = (
    [str(VENV / "embudget")]
    if (VENV / "embudget").exists()
    else [sys.executable, "-m", "embudget.cli"]
)
PY = str(VENV / "python") if (VENV / "python").exists() else sys.executable
MINI = REPO / "src" / "embudget" / "datasets" / "gowalla-mini"
#: A training run long enough to be killed mid-way (validations every 20 of 2,000 steps).
LONG_TRAIN = [
    *EMB,
    "train",
    "--dataset",
    "gowalla-mini",
    "--model",
    "mf",
    "--out",
    "run",
    "--set",
    "train.max_steps=2000",
    "--set",
    "train.eval_every_steps=20",
    "--set",
    "model.d_max=16",
    "--no-progress",
]
AS_CAP = 4 << 30
RSS_LIMIT_MB = 2048.0
TINY = [
    "--set",
    "train.max_steps=40",
    "--set",
    "train.eval_every_steps=20",
    "--set",
    "search.iterations=3",
    "--set",
    "search.sampler.candidates=8",
    "--set",
    "model.d_max=16",
    "--no-progress",
]
# a search long enough to be killed at many points (pretraining, loop, retraining, end)
KILLSET = [
    "--dataset",
    "gowalla-mini",
    "--model",
    "mf",
    "--method",
    "bet",
    "--sparsity",
    "0.8",
    "--set",
    "train.max_steps=200",
    "--set",
    "train.eval_every_steps=50",
    "--set",
    "search.iterations=6",
    "--set",
    "search.sampler.candidates=8",
    "--set",
    "model.d_max=16",
    "--no-progress",
]


# ------------------------------------------------------------------------------------------
# running one child
# ------------------------------------------------------------------------------------------
@dataclass
class Run:
    argv: list[str]
    rc: int
    traceback: bool
    rss_mb: float
    wall_s: float
    timed_out: bool
    stderr_tail: str
    stdout_tail: str


def run(
    argv: list[str],
    cwd: Path,
    timeout: float = 120.0,
    kill_when: Callable[[], bool] | None = None,
    kill_after: float | None = None,
) -> Run:
    """Run argv in cwd under the address-space cap; optionally SIGKILL it when ``kill_when()``
    turns true (polled) and then ``kill_after`` more seconds have passed."""
    cwd.mkdir(parents=True, exist_ok=True)
    full = ["prlimit", f"--as={AS_CAP}", "--", *argv] if shutil.which("prlimit") else argv
    out_f = tempfile.TemporaryFile()  # not in cwd: some cases run in a read-only one
    err_f = tempfile.TemporaryFile()
    t0 = time.monotonic()
    p = subprocess.Popen(full, cwd=cwd, stdout=out_f, stderr=err_f, stdin=subprocess.DEVNULL)
    timed_out = False
    status = None
    ru = None
    armed_at: float | None = None if kill_when is not None else None
    while True:
        pid, st, r = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            status, ru = st, r
            break
        now = time.monotonic()
        if now - t0 > timeout:
            timed_out = True
            os.kill(p.pid, signal.SIGKILL)
        elif kill_when is not None:
            if armed_at is None and kill_when():
                armed_at = now
            if armed_at is not None and now - armed_at >= (kill_after or 0.0):
                os.kill(p.pid, signal.SIGKILL)
                kill_when = None
        time.sleep(0.02)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    out_f.seek(0)
    err_f.seek(0)
    out = out_f.read().decode("utf-8", "replace")
    err = err_f.read().decode("utf-8", "replace")
    out_f.close()
    err_f.close()
    return Run(
        argv=[str(a) for a in argv],
        rc=p.returncode,
        traceback="Traceback" in err,
        rss_mb=ru.ru_maxrss / 1024.0,
        wall_s=round(wall, 2),
        timed_out=timed_out,
        stderr_tail=err[-600:],
        stdout_tail=out[-300:],
    )


@dataclass
class Result:
    category: str
    name: str
    outcome: str  # "ok", "typed error", "repaired", or "FAIL: ..."
    runs: list[Run] = field(default_factory=list)
    note: str = ""

    @property
    def failed(self) -> bool:
        return self.outcome.startswith("FAIL")


def judge(r: Run, expect: str) -> tuple[str, list[str]]:
    """(outcome, problems) of one run; expect is "ok", "error" or "either"."""
    problems = []
    if r.traceback:
        problems.append("traceback")
    if r.rss_mb > RSS_LIMIT_MB:
        problems.append(f"peak RSS {r.rss_mb:.0f} MB")
    if r.timed_out:
        problems.append("timed out")
    if r.rc == 0:
        outcome = "ok"
        if expect == "error":
            problems.append("accepted silently (exit 0)")
    elif r.rc in (2, 3):
        outcome = "typed error"
        lines = [ln for ln in r.stderr_tail.splitlines() if ln.strip()]
        if expect == "ok":
            problems.append(f"unexpected exit {r.rc}")
        if not lines:
            problems.append("no message")
        elif len(lines) > 4 and not r.traceback and ": error: " not in lines[-1]:
            problems.append("multi-line message")
    elif r.rc < 0 and not r.timed_out:
        outcome = "killed"
        problems.append(f"signal {-r.rc}")
    else:
        outcome = f"exit {r.rc}"
        problems.append(f"exit {r.rc}")
    return outcome, problems


def verdict(
    cat: str,
    name: str,
    runs: list[Run],
    expect: str,
    extra: list[str] | None = None,
    outcome: str | None = None,
    killed: int = 0,
) -> Result:
    """``killed``: how many leading runs were SIGKILLed on purpose (their signal is expected)."""
    problems: list[str] = []
    out = "ok"
    for k, r in enumerate(runs):
        if k < killed and r.rc == -signal.SIGKILL:
            continue
        o, p = judge(r, expect if r is runs[-1] else "either")
        problems += p
        out = o
    problems += extra or []
    if problems:
        return Result(cat, name, "FAIL: " + "; ".join(dict.fromkeys(problems)), runs)
    return Result(cat, name, outcome or out, runs)


# ------------------------------------------------------------------------------------------
# helpers: datasets in every format, comparisons, safetensors crafting
# ------------------------------------------------------------------------------------------
def mini_lines(split: str) -> list[str]:
    with gzip.open(MINI / f"{split}.txt.gz", "rt") as f:
        return [ln for ln in f.read().splitlines() if ln.strip()]


def pairs(split: str) -> list[tuple[int, int]]:
    out = []
    for ln in mini_lines(split):
        t = ln.split()
        out += [(int(t[0]), int(i)) for i in t[1:]]
    return out


def format_files() -> dict[str, tuple[str, dict[str, bytes]]]:
    """format -> (main file name, {file: bytes}) of a valid dataset folder."""
    tr, te = pairs("train"), pairs("test")
    lg = ("\n".join(mini_lines("train")) + "\n").encode()
    lg_te = ("\n".join(mini_lines("test")) + "\n").encode()
    lastfm = "".join(f"{u}\t{i}\t1\n" for u, i in tr).encode()
    lastfm_te = "".join(f"{u}\t{i}\t1\n" for u, i in te).encode()
    allp = tr + te
    inter = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(
        f"{u}\t{i}\t4\t{k}\n" for k, (u, i) in enumerate(allp)
    )
    ml = "".join(f"{u}::{i}::4::{k}\n" for k, (u, i) in enumerate(allp))
    csv = "user,item\n" + "".join(f"{u},{i}\n" for u, i in allp)
    return {
        "lightgcn": ("train.txt", {"train.txt": lg, "test.txt": lg_te}),
        "lastfm": ("data1.txt", {"data1.txt": lastfm, "test1.txt": lastfm_te}),
        "recbole": ("mini.inter", {"mini.inter": inter.encode()}),
        "movielens": ("ratings.dat", {"ratings.dat": ml.encode()}),
        "csv": ("interactions.csv", {"interactions.csv": csv.encode()}),
    }


def results_equal(a: Path, b: Path) -> str | None:
    """None when two finished runs agree (test metrics, chosen sizes), else why not."""
    try:
        ra = json.loads((a / "results.json").read_text())
        rb = json.loads((b / "results.json").read_text())
    except (OSError, ValueError) as e:
        return f"results.json unreadable: {e}"
    if ra.get("test") != rb.get("test"):
        return "test metrics differ from the uninterrupted run"
    if (b / "sizes.npz").exists():
        try:
            za, zb = np.load(a / "sizes.npz"), np.load(b / "sizes.npz")
        except (OSError, ValueError) as e:
            return f"sizes.npz unreadable: {e}"
        if sorted(za.files) != sorted(zb.files) or any(
            not np.array_equal(za[k], zb[k]) for k in zb.files
        ):
            return "sizes.npz differs from the uninterrupted run"
    return None


def history_ok(d: Path, n: int) -> str | None:
    h = d / "history.jsonl"
    if not h.exists():
        return "history.jsonl missing"
    lines = h.read_bytes().splitlines()
    try:
        for ln in lines:
            json.loads(ln)
    except ValueError:
        return "history.jsonl has an unparsable line"
    if len(lines) != n:
        return f"history.jsonl has {len(lines)} lines for {n} iterations"
    return None


def read_st(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    b = path.read_bytes()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8 : 8 + n])
    md = json.loads(h.pop("__metadata__")["embudget"])
    dt = {
        "F32": np.float32,
        "F16": np.float16,
        "I64": np.int64,
        "I32": np.int32,
        "I16": np.int16,
        "I8": np.int8,
        "U8": np.uint8,
    }
    arrs = {}
    for k, v in h.items():
        s, e = v["data_offsets"]
        arrs[k] = np.frombuffer(b[8 + n + s : 8 + n + e], dtype=dt[v["dtype"]]).reshape(v["shape"])
    return md, arrs


_DT = {
    "float32": "F32",
    "float16": "F16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
}


def checksum(arrs: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(arrs):
        a = np.ascontiguousarray(arrs[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_st(
    path: Path,
    md: Any,
    arrs: dict[str, np.ndarray],
    rehash: bool = False,
    raw_meta: str | None = None,
    header_extra: dict[str, Any] | None = None,
) -> None:
    if rehash and isinstance(md, dict):
        md = dict(md, sha256=checksum(arrs))
    header: dict[str, Any] = {}
    if raw_meta is not None or md is not None:
        header["__metadata__"] = {"embudget": raw_meta if raw_meta is not None else json.dumps(md)}
    off = 0
    blobs = []
    for k, a in arrs.items():
        a = np.ascontiguousarray(a)
        header[k] = {
            "dtype": _DT[a.dtype.name],
            "shape": list(a.shape),
            "data_offsets": [off, off + a.nbytes],
        }
        off += a.nbytes
        blobs.append(a.tobytes())
    header.update(header_extra or {})
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    path.write_bytes(struct.pack("<Q", len(hb)) + hb + b"".join(blobs))


# ------------------------------------------------------------------------------------------
# the probe
# ------------------------------------------------------------------------------------------
class Probe:
    def __init__(self, out: Path, jobs: int, seed: int) -> None:
        self.out = out
        self.work = out / "work"
        self.jobs = jobs
        self.rng = random.Random(seed)
        self.results: list[Result] = []
        self.lock = threading.Lock()
        self.notes: list[str] = []
        self._n = 0

    def wd(self, tag: str) -> Path:
        with self.lock:
            self._n += 1
            d = self.work / f"{self._n:04d}-{tag}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def add(self, r: Result) -> None:
        with self.lock:
            self.results.append(r)
            mark = "FAIL" if r.failed else "ok  "
            print(f"  {mark} [{r.category}] {r.name}: {r.outcome}", flush=True)

    def pool(self, tasks: list[Callable[[], Result | list[Result]]]) -> None:
        def go(t: Callable[[], Result | list[Result]]) -> None:
            try:
                res = t()
            except Exception as e:  # the probe's own bug: record it, keep going
                res = Result("probe", getattr(t, "__name__", "?"), f"FAIL: probe error {e!r}")
            for r in res if isinstance(res, list) else [res]:
                self.add(r)

        with ThreadPoolExecutor(self.jobs) as ex:
            list(ex.map(go, tasks))

    # -- 1. malformed datasets -------------------------------------------------------------
    def datasets(self) -> None:
        cat = "1 malformed datasets"
        fmts = format_files()
        base = self.work / "datasets"
        rng = random.Random(1)
        bomb = gzip.compress(b"0 1\n" * 40_000_000, 6)  # 160 MB uncompressed, ~0.2 MB
        cases: list[tuple[str, str, str]] = []  # (format, mutation, expect)
        muts = [
            ("truncated-mid-line", "either"),
            ("truncated-10-bytes", "either"),
            ("garbled-bytes", "error"),
            ("binary", "error"),
            ("empty", "error"),
            ("huge-field", "error"),
            ("huge-id", "error"),
            ("bom", "either"),
            ("wrong-delimiter", "error"),
            ("negative-ids", "error"),
            ("non-numeric", "error"),
            ("gz-bomb", "error"),
            ("fifo", "error"),
            ("directory", "error"),
            ("device-null", "error"),
            ("crlf", "either"),
            ("nul-bytes", "error"),
        ]
        for fmt in fmts:
            for m, e in muts:
                if fmt in ("recbole", "csv") and m in ("huge-id", "nul-bytes"):
                    e = "either"  # token ids: any string is a valid raw id
                if fmt in ("recbole", "csv", "movielens") and m in ("non-numeric", "negative-ids"):
                    e = "either"  # raw ids of these formats are tokens
                if fmt == "csv" and m == "wrong-delimiter":
                    e = "either"  # the delimiter is sniffed
                cases.append((fmt, m, e))
        cases += [
            ("lightgcn", "missing-test-file", "error"),
            ("lightgcn", "device-zero", "error"),
            ("csv", "no-header-columns", "error"),
            ("recbole", "bad-typed-header", "error"),
            ("lastfm", "id-2^63", "error"),
            ("csv", "huge-line-count-one-column", "error"),
        ]
        tasks: list[Callable[[], Result | list[Result]]] = []
        for k, (fmt, m, e) in enumerate(cases):
            main, files = fmts[fmt]
            d = base / f"{k:03d}-{fmt}-{m}"
            d.mkdir(parents=True, exist_ok=True)
            for fn, data in files.items():
                (d / fn).write_bytes(data)
            target = d / main
            data = files[main]
            if m == "truncated-mid-line":
                cut = len(data) // 2
                while data[cut : cut + 1] in (b"\n", b"\t", b" ", b","):
                    cut += 1
                target.write_bytes(data[: cut + 1])
            elif m == "truncated-10-bytes":
                target.write_bytes(data[:10])
            elif m == "garbled-bytes":
                b = bytearray(data)
                for _ in range(max(1, len(b) // 100)):
                    b[rng.randrange(len(b))] = rng.randrange(256)
                target.write_bytes(bytes(b))
            elif m == "binary":
                target.write_bytes(rng.randbytes(4096))
            elif m == "empty":
                target.write_bytes(b"")
            elif m == "huge-field":
                lines = data.split(b"\n")
                lines[3] = (
                    lines[3] + b"9" * (10 << 20) if fmt != "csv" else b"1," + b"x" * (10 << 20)
                )
                target.write_bytes(b"\n".join(lines))
            elif m == "huge-id":
                lines = data.split(b"\n")
                sep = {
                    "lightgcn": b" ",
                    "lastfm": b"\t",
                    "recbole": b"\t",
                    "movielens": b"::",
                    "csv": b",",
                }[fmt]
                tail = b"\t4\t1" if fmt == "recbole" else b"::4::1" if fmt == "movielens" else b""
                tail = b"\t1" if fmt == "lastfm" else tail
                lines[3] = b"5" + sep + b"99999999999999999999999" + tail
                target.write_bytes(b"\n".join(lines))
            elif m == "id-2^63":
                lines = data.split(b"\n")
                lines[3] = b"9223372036854775808\t5\t1"
                target.write_bytes(b"\n".join(lines))
            elif m == "bom":
                target.write_bytes(b"\xef\xbb\xbf" + data)
            elif m == "wrong-delimiter":
                target.write_bytes(
                    data.replace(b"\t", b";")
                    .replace(b" ", b";")
                    .replace(b",", b";")
                    .replace(b"::", b";")
                )
            elif m == "negative-ids":
                lines = data.split(b"\n")
                for j in range(2, 40):
                    lines[j] = b"-1" + lines[j]  # "-10 ...": a negative user id
                target.write_bytes(b"\n".join(lines))
            elif m == "non-numeric":
                lines = data.split(b"\n")
                for j in range(2, 40):
                    lines[j] = lines[j].replace(b"1", b"x")
                target.write_bytes(b"\n".join(lines))
            elif m == "gz-bomb":
                target.unlink()
                (d / (main + ".gz")).write_bytes(bomb)
            elif m == "fifo":
                target.unlink()
                os.mkfifo(target)
            elif m == "directory":
                target.unlink()
                target.mkdir()
            elif m == "device-null":
                target.unlink()
                target.symlink_to("/dev/null")
            elif m == "device-zero":
                target.unlink()
                target.symlink_to("/dev/zero")
            elif m == "crlf":
                target.write_bytes(data.replace(b"\n", b"\r\n"))
            elif m == "nul-bytes":
                cut = data.index(b"\n", 1000) + 1  # NULs where a user id starts
                target.write_bytes(data[:cut] + b"\0" * 64 + data[cut:])
            elif m == "missing-test-file":
                (d / "test.txt").unlink()
            elif m == "no-header-columns":
                target.write_bytes(b"a,b\n" + data.split(b"\n", 1)[1])
            elif m == "bad-typed-header":
                target.write_bytes(b"user_id:bogus\titem_id\n" + data.split(b"\n", 1)[1])
            elif m == "huge-line-count-one-column":
                target.write_bytes(b"user\n" + b"1\n" * 2_000_000)
            ds = str(d if fmt not in ("csv",) or m in ("directory",) else target)
            if fmt == "csv" and m in ("fifo", "device-null", "gz-bomb"):
                ds = str(target) + (".gz" if m == "gz-bomb" else "")
            if fmt == "csv" and m == "directory":
                ds = str(target)
            name = f"{fmt}/{m}"
            proto = ["--protocol", "standard"] if fmt not in ("lightgcn", "lastfm") else []

            def t_stats(
                ds: str = ds, name: str = name, e: str = e, proto: list[str] = proto
            ) -> Result:
                r = run([*EMB, "data", "stats", ds, *proto], self.wd("ds"), timeout=90)
                return verdict(cat, f"data stats {name}", [r], e)

            def t_train(
                ds: str = ds, name: str = name, e: str = e, proto: list[str] = proto
            ) -> Result:
                r = run(
                    [
                        *EMB,
                        "train",
                        "--dataset",
                        ds,
                        "--model",
                        "mf",
                        "--out",
                        "run",
                        *proto,
                        *TINY,
                    ],
                    self.wd("dt"),
                    timeout=120,
                )
                return verdict(cat, f"train {name}", [r], e)

            tasks += [t_stats, t_train]
        self.pool(tasks)

    # -- 2. bad arguments ------------------------------------------------------------------
    def arguments(self) -> None:
        cat = "2 bad arguments"
        bad_sets = [
            "no.such.key=1",
            "train.lrr=0.1",
            "search.finetune_steps=3",
            "train.lr=abc",
            "train.lr=-1",
            "train.lr=nan",
            "train.lr=inf",
            "train.lr=0",
            "train.max_steps=-5",
            "train.max_steps=1.5",
            "train.max_steps=abc",
            "train.eval_every_steps=0",
            "train.batch_size=0",
            "train.batch_size=-1",
            "model.d_max=0",
            "model.d_max=40000",
            "model.d_max=-3",
            "model.d_max=nan",
            "eval.ks=[100000]",
            "eval.ks=[]",
            "eval.ks=[0]",
            "eval.ks=abc",
            "threads=-1",
            "threads=0",
            "threads=99999",
            "data.split_seed=-1",
            "seed=-1",
            "search.iterations=-1",
            "search.sampler.candidates=0",
            "budget.sparsity=1.5",
            "budget.sparsity=nan",
            "budget.dtype=fp64",
            "model.name=transformer",
            "search.method=magic",
            "device=tpu",
            "cache_dir=",
            "data.name=",
            "train.lr",
            "=1",
            "train.weight_decay=-1e9",
        ]
        tasks: list[Callable[[], Result | list[Result]]] = []

        def mk(argv: list[str], name: str, expect: str = "error", timeout: float = 90) -> None:
            def t() -> Result:
                return verdict(cat, name, [run(argv, self.wd("arg"), timeout=timeout)], expect)

            tasks.append(t)

        for s in bad_sets:
            mk([*EMB, "config", "show", "--set", s], f"config show --set {s}")
            mk(
                [*EMB, "train", "--dataset", "gowalla-mini", "--out", "run", *TINY, "--set", s],
                f"train --set {s}",
            )
        srch = [*EMB, "search", "--dataset", "gowalla-mini", "--model", "mf", "--out", "run", *TINY]
        for extra, nm in [
            (["--sparsity", "1.5"], "sparsity 1.5"),
            (["--sparsity", "-0.1"], "sparsity -0.1"),
            (["--sparsity", "nan"], "sparsity nan"),
            (["--sparsity", "1"], "sparsity 1"),
            (["--params", "0"], "params 0"),
            (["--params", "10"], "params 10 (< N)"),
            (["--params", "-5"], "params -5"),
            (["--budget-bytes", "1"], "bytes 1"),
            (["--budget-bytes", "100"], "bytes 100"),
            (["--budget-bytes", "abc"], "bytes abc"),
            (["--budget-bytes", "1e400"], "bytes 1e400"),
            (["--sparsity", "0.8", "--params", "100"], "sparsity and params"),
            (["--fast", "--faithful"], "fast and faithful"),
            (["--resume", "--overwrite"], "resume and overwrite (nothing to resume)"),
            (["--method", "magic"], "method magic"),
            (["--seed", "-1"], "seed -1"),
            (["--seed", "abc"], "seed abc"),
            (["--device", "tpu"], "device tpu"),
            (["--device", "cuda:99"], "device cuda:99"),
            (["--dataset", ""], "dataset ''"),
            (["--dataset", "no-such-dataset"], "dataset unknown"),
            (["--config", "/nonexistent.yaml"], "config missing"),
            (["--resume"], "resume without a run"),
        ]:
            mk([*srch, *extra], f"search {nm}")
        mk([*EMB, "train", "--dataset", "gowalla-mini"], "train missing --out")
        mk(
            [*EMB, "train", "--dataset", "gowalla-mini", "--model", "bert", "--out", "r"],
            "train model bert",
        )
        mk(
            [*EMB, "train", "--out", "/proc/embudget-run", "--dataset", "gowalla-mini", *TINY],
            "train --out under /proc",
        )
        mk([*EMB, "export", "/nonexistent", "--out", "x.safetensors"], "export missing run dir")
        mk([*EMB, "export", "/etc/hostname", "--out", "x.safetensors"], "export run dir a file")
        mk([*EMB, "export", "/tmp"], "export missing --out")
        mk([*EMB, "export", "/tmp", "--out", "x.safetensors"], "export not a run dir")
        mk([*EMB, "export", "/tmp", "--out", "x", "--format", "onnx"], "export format onnx")
        mk([*EMB, "export", "/tmp", "--out", "x", "--dtype", "fp8"], "export dtype fp8")
        mk([*EMB, "recommend", "/nonexistent.safetensors", "--user", "1"], "recommend missing file")
        mk([*EMB, "recommend", "x.safetensors"], "recommend without user")
        mk([*EMB, "report", "/nonexistent"], "report missing dir")
        mk([*EMB, "report", "/tmp/../proc/self"], "report /proc/self")
        mk(
            [*EMB, "bench", "--datasets", "gowalla-mini", "--seeds", "a", "--out", "g"],
            "bench seeds a",
        )
        mk(
            [*EMB, "bench", "--datasets", "gowalla-mini", "--sparsities", "2", "--out", "g"],
            "bench sparsity 2",
        )
        mk(
            [*EMB, "bench", "--datasets", "gowalla-mini", "--methods", "magic", "--out", "g"],
            "bench method magic",
        )
        mk([*EMB, "bench", "--datasets", "", "--out", "g"], "bench datasets ''")
        mk(
            [*EMB, "bench", "--datasets", "gowalla-mini", "--models", "bert", "--out", "g"],
            "bench model bert",
        )
        mk([*EMB, "data", "stats", "gowalla-mini", "--split-seed", "-1"], "data stats seed -1")
        mk([*EMB, "data", "stats", ""], "data stats ''")
        mk([*EMB, "data", "stats", "no-such-dataset"], "data stats unknown")
        mk([*EMB, "config", "show", "--model", "bert"], "config show model bert")
        mk([*EMB, "config", "show", "--config", "/etc/passwd"], "config show --config /etc/passwd")

        # report on garbage / wrong-schema results.jsonl
        for nm, content in [
            ("garbage", os.urandom(2000)),
            ("wrong-schema", b'{"a": 1}\n'),
            ("torn", b'{"run_id": "x", "split": "te'),
            ("empty", b""),
        ]:
            d = self.work / f"report-{nm}"
            d.mkdir(parents=True, exist_ok=True)
            (d / "results.jsonl").write_bytes(content)
            mk([*EMB, "report", str(d), "--out", str(d / "r.md")], f"report {nm} results.jsonl")
        yml = self.work / "evil.yaml"
        yml.write_text("train: !!python/object/apply:os.system ['echo pwned']\n")
        mk([*EMB, "config", "show", "--config", str(yml)], "config !!python yaml")
        self.pool(tasks)

    # -- shared: one finished tiny search and its exports ----------------------------------
    def base_run(self) -> Path:
        d = self.work / "base"
        r = run(
            [
                *EMB,
                "search",
                "--dataset",
                "gowalla-mini",
                "--model",
                "mf",
                "--method",
                "bet",
                "--sparsity",
                "0.8",
                "--out",
                "run",
                *TINY,
            ],
            d,
            timeout=300,
        )
        if r.rc != 0:
            raise RuntimeError(f"base search failed: {r.stderr_tail}")
        for fmt, ext in [("safetensors", "safetensors"), ("npz", "npz")]:
            e = run(
                [*EMB, "export", "run", "--format", fmt, "--with-history", "--out", f"t.{ext}"], d
            )
            if e.rc != 0:
                raise RuntimeError(f"base export failed: {e.stderr_tail}")
        return d

    # -- 3. crafted exports and recommend arguments -----------------------------------------
    def exports(self, base: Path) -> None:
        cat = "3 crafted exports / recommend"
        st = base / "t.safetensors"
        npz = base / "t.npz"
        md, arrs = read_st(st)
        cdir = self.work / "crafted"
        cdir.mkdir(parents=True, exist_ok=True)
        files: list[tuple[str, Path, str, bool]] = []  # (name, path, expect, also via load())
        rng = random.Random(3)

        def craft(name: str, expect: str = "error", via_load: bool = True, **kw: Any) -> Path:
            p = cdir / f"{len(files):03d}-{name}.safetensors"
            write_st(p, kw.pop("md", md), kw.pop("arrs", arrs), **kw)
            files.append((name, p, expect, via_load))
            return p

        def setp(d: dict[str, Any], path: str, v: Any) -> dict[str, Any]:
            d = json.loads(json.dumps(d))
            cur = d
            ks = path.split(".")
            for k in ks[:-1]:
                cur = cur[k]
            cur[ks[-1]] = v
            return d

        craft("control-rewritten", expect="ok", md=md)
        for path, v in [
            ("format_version", "abc"),
            ("format_version", None),
            ("format_version", 999),
            ("n_users", None),
            ("n_users", -1),
            ("n_users", 10**12),
            ("n_items", "x"),
            ("model.options", [1, 2]),
            ("model.d_max", 2**30),
            ("model.d_max", 2**26),
            ("model.d_max", 0),
            ("model.name", "bert"),
            ("model.options", {"n_layers": 10**6}),
            ("layout", "spiral"),
            ("dtype", "fp64"),
            ("sha256", "0" * 64),
            ("sha256", None),
            ("ids", None),
            ("ids.user", "pickle"),
            ("tables", [1]),
            ("memory", "x"),
            ("container", "npz"),
            ("format", "other"),
        ]:
            craft(f"meta {path}={json.dumps(v)[:20]}", md=setp(md, path, v))
        craft("meta is a list", md=[1, 2, 3])
        craft("meta is a string", md="hello")
        craft("meta not JSON", raw_meta="{not json")
        craft("no __metadata__", md=None)

        def tens(name: str, expect: str = "error", **changes: np.ndarray) -> None:
            a = dict(arrs)
            for k, v in changes.items():
                a[k.replace("__", ".")] = v
            craft(name, expect=expect, arrs=a, rehash=True)

        hi = arrs["history.indices"]
        tens("history all negative", history__indices=-np.ones_like(hi))
        tens(
            "history index out of range",
            history__indices=np.where(np.arange(hi.size) == 5, 10**6, hi).astype(hi.dtype),
        )
        ip = arrs["history.indptr"].copy()
        ip[10] = ip[11] + 5
        tens("history indptr decreasing", history__indptr=ip)
        ip2 = arrs["history.indptr"].copy()
        ip2[-1] += 1000
        tens("history indptr past end", history__indptr=ip2)
        tip = arrs["train.indptr"].copy()
        tip[-1] = -1
        tens("train indptr negative", train__indptr=tip)
        iu = arrs["ids.user"].copy()
        iu[1] = iu[0]
        tens("duplicate raw user ids", ids__user=iu)
        ii = arrs["ids.item"].copy()
        ii[5] = ii[6]
        tens("duplicate raw item ids", ids__item=ii)
        su = arrs["sizes.user"].copy()
        su[0] = 1000
        tens("size above d_max", sizes__user=su)
        su0 = arrs["sizes.user"].copy()
        su0[0] = -1
        tens("negative size", sizes__user=su0)
        ou = arrs["offsets.user"].copy()
        ou[-1] += 7
        tens("offsets past values", offsets__user=ou)
        tens("sizes wrong length", sizes__user=arrs["sizes.user"][:-1])
        tens("ids wrong dtype", ids__user=arrs["ids.user"].astype(np.float32))
        nan_values = np.full_like(arrs["emb.user_emb.values"], np.nan)
        tens("values all nan", expect="either", emb__user_emb__values=nan_values)
        a2 = dict(arrs)
        a2.pop("history.indices")
        craft("missing tensor", arrs=a2, rehash=True)
        craft(
            "extra header entry bad offsets",
            header_extra={
                "junk": {"dtype": "F32", "shape": [4], "data_offsets": [10**12, 10**12 + 16]}
            },
        )
        craft(
            "header entry overflowing shape",
            header_extra={
                "junk": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 16]}
            },
        )

        def raw(name: str, data: bytes, ext: str = "safetensors", expect: str = "error") -> Path:
            p = cdir / f"{len(files):03d}-{name}.{ext}"
            p.write_bytes(data)
            files.append((name, p, expect, True))
            return p

        sb = st.read_bytes()
        raw("header length 2^63", struct.pack("<Q", 2**63) + sb[8:])
        raw("header length past file", struct.pack("<Q", len(sb)) + sb[8:])
        raw("header not JSON", struct.pack("<Q", 16) + b"{{{{{{{{{{{{{{{{" + sb[24:])
        hdr = b"[1,2,3]" + b" "
        raw("header a JSON list", struct.pack("<Q", len(hdr)) + hdr)
        # sparse files whose header claims a huge tensor
        for gb in (3, 10):
            n = gb * (1 << 30) // 4
            header = {
                "__metadata__": {"embudget": json.dumps(md)},
                "emb.user_emb.values": {"dtype": "F32", "shape": [n], "data_offsets": [0, n * 4]},
            }
            hb = json.dumps(header).encode()
            hb += b" " * (-len(hb) % 8)
            p = cdir / f"{len(files):03d}-sparse {gb} GB claim.safetensors"
            with p.open("wb") as f:
                f.write(struct.pack("<Q", len(hb)) + hb)
                f.truncate(8 + len(hb) + n * 4)
            files.append((f"sparse {gb} GB claim", p, "error", True))
        # wrong types
        raw("pickle", pickle.dumps({"a": np.zeros(3)}))
        buf = io.BytesIO()
        np.savez(buf, a=np.array([{"x": 1}], dtype=object))
        raw("object-array npz", buf.getvalue(), ext="npz")
        zb = io.BytesIO()
        with zipfile.ZipFile(zb, "w") as z:
            z.writestr("archive/data.pkl", pickle.dumps({"w": 1}))
            z.writestr("archive/version", "3\n")
        raw("torch-zip", zb.getvalue())
        raw("torch-zip as npz", zb.getvalue(), ext="npz")
        raw("yaml python payload", b"!!python/object/apply:os.system ['echo pwned']\n")
        raw("empty", b"")
        raw("random bytes", rng.randbytes(4096))
        pdir = cdir / "a-directory.safetensors"
        pdir.mkdir(exist_ok=True)
        files.append(("directory", pdir, "error", True))
        pf = cdir / "fifo.safetensors"
        if not pf.exists():
            os.mkfifo(pf)
        files.append(("fifo", pf, "error", True))
        pz = cdir / "zero.safetensors"
        if not pz.exists():
            pz.symlink_to("/dev/zero")
        files.append(("/dev/zero", pz, "error", True))
        # truncations and bit flips of real exports
        for src, ext, nt, nf in [(st, "safetensors", 10, 10), (npz, "npz", 8, 4)]:
            b = src.read_bytes()
            for _ in range(nt):
                cut = rng.randrange(1, len(b))
                raw(f"{ext} truncated at {cut}", b[:cut], ext=ext)
            for k in range(nf):
                bb = bytearray(b)
                pos = rng.randrange(len(bb)) if k % 2 else rng.randrange(8, min(len(bb), 2000))
                bb[pos] ^= 1 << rng.randrange(8)
                raw(
                    f"{ext} bit flip at {pos}",
                    bytes(bb),
                    ext=ext,
                    expect="either" if ext == "npz" and k % 2 == 0 else "error",
                )

        tasks: list[Callable[[], Result | list[Result]]] = []
        for name, p, expect, via_load in files:

            def t_rec(p: Path = p, name: str = name, expect: str = expect) -> Result:
                r = run(
                    [*EMB, "recommend", str(p), "--user", "0", "-k", "5"],
                    self.wd("rec"),
                    timeout=60,
                )
                res = verdict(cat, f"recommend: {name}", [r], expect)
                if res.outcome == "ok" and "bit flip" in name:
                    res.note = "bit flip in a header byte that does not change meaning"
                return res

            tasks.append(t_rec)
            if via_load:

                def t_load(p: Path = p, name: str = name, expect: str = expect) -> Result:
                    code = (
                        "import sys, embudget\nfrom embudget.errors import EmbudgetError\n"
                        f"try:\n    embudget.load({str(p)!r})\nexcept EmbudgetError as e:\n"
                        "    print(e, file=sys.stderr); sys.exit(2)\n"
                    )
                    r = run([PY, "-c", code], self.wd("load"), timeout=60)
                    return verdict(cat, f"embudget.load: {name}", [r], expect)

                tasks.append(t_load)
        # recommend arguments on a good export
        bad_users = cdir / "users.bin"
        bad_users.write_bytes(rng.randbytes(500))
        empty_users = cdir / "users.empty"
        empty_users.write_bytes(b"")
        for extra, nm, expect in [
            (["--user", "18446744073709551616"], "user 2^64", "error"),
            (["--user", "-1"], "user -1", "error"),
            (["--user", "abc"], "user abc", "error"),
            (["--user", "999999"], "unknown user", "error"),
            (["--user", "0", "-k", "0"], "k 0", "error"),
            (["--user", "0", "-k", "-3"], "k -3", "error"),
            (["--user", "0", "-k", "1000000000"], "k 10^9", "either"),
            (["--users-file", str(bad_users)], "binary users-file", "error"),
            (["--users-file", str(empty_users)], "empty users-file", "either"),
            (["--users-file", "/nonexistent"], "missing users-file", "error"),
            (["--users-file", str(cdir)], "users-file a directory", "error"),
            (["--user", "0", "--exclude", "everything"], "exclude bogus", "error"),
        ]:

            def t_arg(extra: list[str] = extra, nm: str = nm, expect: str = expect) -> Result:
                r = run([*EMB, "recommend", str(st), *extra], self.wd("rarg"), timeout=60)
                return verdict(cat, f"recommend {nm}", [r], expect)

            tasks.append(t_arg)
        self.pool(tasks)

    # -- 4. kill -9 ------------------------------------------------------------------------
    def kills(self, base: Path) -> None:
        cat = "4 kill -9"
        ref = self.work / "kill-ref"
        r0 = run([*EMB, "search", *KILLSET, "--out", "run"], ref, timeout=600)
        if r0.rc != 0:
            self.add(Result(cat, "uninterrupted reference", f"FAIL: exit {r0.rc}", [r0]))
            return
        T = r0.wall_s
        self.notes.append(f"kill reference search: {T:.1f} s")
        tasks: list[Callable[[], Result | list[Result]]] = []

        def killed(delays: list[float], name: str) -> Callable[[], Result]:
            def t() -> Result:
                d = self.wd("kill")
                runs = []
                for dl in delays:
                    runs.append(
                        run(
                            [
                                *EMB,
                                "search",
                                *KILLSET,
                                "--out",
                                "run",
                                *(["--resume"] if (d / "run").exists() else []),
                            ],
                            d,
                            timeout=600,
                            kill_when=lambda: (d / "run" / "config.yaml").exists(),
                            kill_after=dl,
                        )
                    )
                fin = run([*EMB, "search", *KILLSET, "--out", "run", "--resume"], d, timeout=600)
                runs.append(fin)
                extra = []
                if fin.rc == 0:
                    for why in (results_equal(ref / "run", d / "run"), history_ok(d / "run", 6)):
                        if why:
                            extra.append(why)
                where = ", ".join(f"{x:.1f}s" for x in delays)
                res = verdict(
                    cat,
                    f"search {name} killed at +{where}",
                    runs,
                    "ok",
                    extra,
                    outcome="resumed = uninterrupted",
                    killed=len(delays),
                )
                return res

            t.__name__ = name
            return t

        for k in range(12):
            tasks.append(killed([self.rng.uniform(0.0, T * 1.05)], f"#{k + 1}"))
        tasks.append(killed([self.rng.uniform(0.0, T * 0.4) for _ in range(4)], "#13 (4 kills)"))

        fmts = [("safetensors", "safetensors"), ("npz", "npz"), ("int8", "safetensors")]
        for k in range(14):
            fmt, ext = fmts[k % 3]
            dl = self.rng.uniform(0.3, 2.5)

            def t_exp(fmt: str = fmt, ext: str = ext, dl: float = dl, k: int = k) -> Result:
                d = self.wd("kexp")
                out = d / f"x.{ext}"
                how = ["--dtype", "int8"] if fmt == "int8" else ["--format", fmt]
                r = run(
                    [*EMB, "export", str(base / "run"), *how, "--out", str(out)],
                    d,
                    kill_when=lambda: True,
                    kill_after=dl,
                )
                runs = [r]
                extra = []
                if out.exists():
                    code = f"import embudget; embudget.load({str(out)!r})"
                    chk = run([PY, "-c", code], d, timeout=60)
                    runs.append(chk)
                    if chk.rc != 0:
                        extra.append("torn export file left behind")
                state = "complete file" if out.exists() else "no file"
                tmp = [p.name for p in d.iterdir() if p.name.startswith(("x.", ".x")) and p != out]
                res = verdict(
                    cat,
                    f"export {fmt} killed at +{dl:.1f}s",
                    runs,
                    "either",
                    extra,
                    outcome=state,
                    killed=1,
                )
                res.note = f"leftover temp files: {tmp}" if tmp else ""
                return res

            tasks.append(t_exp)
        self.pool(tasks)
        self.ref = ref

    # -- 5. damaged run directories --------------------------------------------------------
    def damaged(self, base: Path) -> None:
        cat = "5 damaged run dirs"
        ref = getattr(self, "ref", None)
        if ref is None:
            return
        tmpl = {}

        def nlines(p: Path) -> int:
            return len(p.read_bytes().splitlines()) if p.exists() else 0

        stages = {
            "loop": lambda d: nlines(d / "run" / "history.jsonl") >= 2,
            "retrain": lambda d: (
                any((d / "run").glob("*.ckpt.pt")) or nlines(d / "run" / "retrain.jsonl") >= 1
            ),
            "pretrain": lambda d: any((d / "cache").glob("*.ckpt.pt")),
        }
        for st, cond in stages.items():
            d = self.work / f"tmpl-{st}"

            def ready(d: Path = d, cond: Callable[[Path], bool] = cond) -> bool:
                return cond(d)

            run([*EMB, "search", *KILLSET, "--out", "run"], d, timeout=600, kill_when=ready)
            tmpl[st] = d
        dtrain = self.work / "tmpl-train"
        run(
            LONG_TRAIN,
            dtrain,
            timeout=600,
            kill_when=lambda: nlines(dtrain / "run" / "metrics.jsonl") >= 3,
            kill_after=0.0,
        )

        def trunc(p: Path, frac: float = 0.5) -> None:
            b = p.read_bytes()
            p.write_bytes(b[: int(len(b) * frac)])

        def tear_last(p: Path) -> None:
            b = p.read_bytes().rstrip(b"\n")
            cut = b.rfind(b"\n")
            p.write_bytes(b[: cut + 1 + max(1, (len(b) - cut) // 2)])

        def first(d: Path, pat: str) -> Path:
            got = sorted(d.glob(pat))
            if not got:
                raise FileNotFoundError(f"{pat} not in {d}")
            return got[0]

        def flip(p: Path) -> None:
            b = bytearray(p.read_bytes())
            b[len(b) // 2] ^= 0x10
            p.write_bytes(bytes(b))

        search_resume = [*EMB, "search", *KILLSET, "--out", "run", "--resume"]
        train_resume = [*LONG_TRAIN, "--resume"]
        export = [*EMB, "export", "run", "--out", "x.safetensors"]
        cases: list[tuple[str, Path, Callable[[Path], object], list[str], str]] = [
            (
                "search_state.pt truncated",
                tmpl["loop"],
                lambda d: trunc(d / "run/search_state.pt"),
                search_resume,
                "resume",
            ),
            (
                "search_state.pt empty",
                tmpl["loop"],
                lambda d: trunc(d / "run/search_state.pt", 0),
                search_resume,
                "resume",
            ),
            (
                "search_state.pt bit flip",
                tmpl["loop"],
                lambda d: flip(d / "run/search_state.pt"),
                search_resume,
                "resume",
            ),
            (
                "history.jsonl torn last line",
                tmpl["loop"],
                lambda d: tear_last(d / "run/history.jsonl"),
                search_resume,
                "resume",
            ),
            (
                "history.jsonl deleted",
                tmpl["loop"],
                lambda d: (d / "run/history.jsonl").unlink(),
                search_resume,
                "resume",
            ),
            (
                "history.jsonl binary line appended",
                tmpl["loop"],
                lambda d: (d / "run/history.jsonl").open("ab").write(b"\xff\xfe\x00garbage\n"),
                search_resume,
                "resume",
            ),
            (
                "config.yaml non-UTF-8",
                tmpl["loop"],
                lambda d: (d / "run/config.yaml").write_bytes(b"\xff\xfe\xfa" * 20),
                search_resume,
                "error",
            ),
            (
                "config.yaml empty",
                tmpl["loop"],
                lambda d: (d / "run/config.yaml").write_bytes(b""),
                search_resume,
                "error",
            ),
            (
                "retrain checkpoint truncated",
                tmpl["retrain"],
                lambda d: (
                    trunc(first(d / "run", "*.ckpt.pt"))
                    if any((d / "run").glob("*.ckpt.pt"))
                    else tear_last(d / "run/retrain.jsonl")
                ),
                search_resume,
                "resume",
            ),
            (
                "retrain.jsonl torn last line",
                tmpl["retrain"],
                lambda d: (
                    tear_last(d / "run/retrain.jsonl")
                    if (d / "run/retrain.jsonl").exists()
                    else trunc(first(d / "run", "*.ckpt.pt"), 0)
                ),
                search_resume,
                "resume",
            ),
            (
                "pretraining checkpoint truncated",
                tmpl["pretrain"],
                lambda d: trunc(first(d / "cache", "*.ckpt.pt")),
                search_resume,
                "resume",
            ),
            (
                "pretraining checkpoint empty",
                tmpl["pretrain"],
                lambda d: trunc(first(d / "cache", "*.ckpt.pt"), 0),
                search_resume,
                "resume",
            ),
            (
                "train checkpoint.pt truncated",
                dtrain,
                lambda d: trunc(d / "run/checkpoint.pt"),
                train_resume,
                "either",
            ),
            (
                "train metrics.jsonl torn",
                dtrain,
                lambda d: tear_last(d / "run/metrics.jsonl"),
                train_resume,
                "either",
            ),
            (
                "finished: results.json truncated → export",
                ref,
                lambda d: trunc(d / "run/results.json"),
                export,
                "error",
            ),
            (
                "finished: results.json empty → export",
                ref,
                lambda d: trunc(d / "run/results.json", 0),
                export,
                "error",
            ),
            (
                "finished: sizes.npz truncated → export",
                ref,
                lambda d: trunc(d / "run/sizes.npz"),
                export,
                "error",
            ),
            (
                "finished: sizes.npz deleted → export",
                ref,
                lambda d: (d / "run/sizes.npz").unlink(),
                export,
                "either",  # export reads the sizes from the model's offsets: not damage
            ),
            (
                "finished: model.safetensors truncated → export",
                ref,
                lambda d: trunc(d / "run/model.safetensors"),
                export,
                "error",
            ),
            (
                "finished: config.yaml non-UTF-8 → export",
                ref,
                lambda d: (d / "run/config.yaml").write_bytes(b"\xff\xfe" * 30),
                export,
                "error",
            ),
            (
                "cached Θ0 truncated → new run",
                ref,
                lambda d: trunc(first(d / "cache", "pretrain-*[!t].pt")),
                [*EMB, "search", *KILLSET, "--out", "run2"],
                "fresh",
            ),
            (
                "cached Θ0 bit flip → new run",
                ref,
                lambda d: flip(first(d / "cache", "pretrain-*[!t].pt")),
                [*EMB, "search", *KILLSET, "--out", "run2"],
                "fresh",
            ),
        ]
        tasks: list[Callable[[], Result | list[Result]]] = []
        for name, src, damage, argv, kind in cases:

            def t(
                name: str = name,
                src: Path = src,
                damage: Callable[[Path], object] = damage,
                argv: list[str] = argv,
                kind: str = kind,
            ) -> Result:
                d = self.wd("dmg")
                shutil.rmtree(d)
                shutil.copytree(src, d, symlinks=True)
                damage(d)
                r = run(argv, d, timeout=600)
                extra = []
                out = "typed error"
                if r.rc == 0 and kind in ("resume", "fresh"):
                    rd = d / ("run2" if kind == "fresh" else "run")
                    for why in (results_equal(ref / "run", rd), history_ok(rd, 6)):
                        if why:
                            extra.append(why)
                    out = "repaired (= uninterrupted)"
                elif r.rc == 0 and kind == "error":
                    extra.append("damage accepted silently")
                elif r.rc == 0:
                    out = "repaired"
                elif kind == "fresh":
                    extra.append("damaged cache entry not rebuilt")
                if r.rc in (2, 3) and "Traceback" not in r.stderr_tail:
                    msg = r.stderr_tail.strip().splitlines()[-1] if r.stderr_tail.strip() else ""
                    if kind != "fresh" and not any(
                        w in msg for w in ("overwrite", "delete", "remove", "--")
                    ):
                        extra.append("error gives no fix")
                return verdict(cat, name, [r], "either", extra, outcome=out)

            tasks.append(t)
        self.pool(tasks)

    # -- 6. two bench processes ------------------------------------------------------------
    def bench(self) -> None:
        cat = "6 two bench processes"
        for methods in ["su,sr", "bet,su"]:
            d = self.wd("bench")
            argv = [
                *EMB,
                "bench",
                "--datasets",
                "gowalla-mini",
                "--models",
                "mf",
                "--methods",
                methods,
                "--sparsities",
                "0.8",
                "--seeds",
                "0",
                "--out",
                "grid",
                *TINY,
                "--set",
                "threads=1",
            ]
            got: list[Run] = []

            def one(argv: list[str] = argv, d: Path = d, got: list[Run] = got) -> None:
                got.append(run(argv, d, timeout=600))

            th = [threading.Thread(target=one) for _ in range(2)]
            for x in th:
                x.start()
                time.sleep(0.3)
            for x in th:
                x.join()
            extra = []
            rj = d / "grid" / "results.jsonl"
            keys: Counter[str] = Counter()
            try:
                for ln in rj.read_bytes().splitlines():
                    rec = json.loads(ln)
                    keys[
                        json.dumps(
                            {
                                k: v
                                for k, v in rec.items()
                                if k not in ("value", "time", "timestamp")
                            },
                            sort_keys=True,
                        )
                    ] += 1
            except (OSError, ValueError) as e:
                extra.append(f"results.jsonl not intact: {e}")
            dup = [k for k, c in keys.items() if c > 1]
            if dup:
                extra.append(f"{len(dup)} result keys written twice (a cell ran twice)")
            runs_dir = d / "grid" / "runs"
            cells = [p for p in runs_dir.iterdir() if p.is_dir()] if runs_dir.exists() else []
            cells_done = {json.loads(k).get("run_id", json.loads(k).get("cell")) for k in keys}
            if len(cells) != 2:
                extra.append(f"{len(cells)} run directories for 2 cells")
            res = verdict(
                cat,
                f"2 × bench {methods} (2 cells)",
                got,
                "ok",
                extra,
                outcome=f"{len(cells_done)} cells, {sum(keys.values())} lines",
            )
            self.add(res)

    # -- 7. failed run then rerun ----------------------------------------------------------
    def rerun(self) -> None:
        cat = "7 failed run → rerun"
        good = format_files()["lightgcn"][1]
        tasks: list[Callable[[], Result | list[Result]]] = []

        def bad_data(cmd: str) -> Callable[[], Result]:
            def t() -> Result:
                d = self.wd("rerun")
                data = d / "data"
                data.mkdir()
                (data / "train.txt").write_bytes(b"1 2 x\n" + good["train.txt"])
                (data / "test.txt").write_bytes(good["test.txt"])
                extra_args = ["--sparsity", "0.8"] if cmd == "search" else []
                argv = [
                    *EMB,
                    cmd,
                    "--dataset",
                    str(data),
                    "--model",
                    "mf",
                    "--out",
                    "run",
                    *TINY,
                    *extra_args,
                ]
                r1 = run(argv, d)
                (data / "train.txt").write_bytes(good["train.txt"])
                r2 = run(argv, d)
                ex = [] if r1.rc != 0 else ["bad data accepted"]
                return verdict(
                    cat, f"{cmd}: bad data, fixed, rerun", [r1, r2], "ok", ex, outcome="rerun ok"
                )

            return t

        def budget(first: list[str], then: list[str], nm: str) -> Callable[[], Result]:
            def t() -> Result:
                d = self.wd("rerun")
                argv = [
                    *EMB,
                    "search",
                    "--dataset",
                    "gowalla-mini",
                    "--model",
                    "mf",
                    "--out",
                    "run",
                    *TINY,
                ]
                r1 = run([*argv, *first], d)
                r2 = run([*argv, *then], d)
                ex = [] if r1.rc == 3 or r1.rc == 2 else [f"first run exit {r1.rc}"]
                return verdict(cat, nm, [r1, r2], "ok", ex, outcome="rerun ok")

            return t

        tasks += [
            bad_data("train"),
            bad_data("search"),
            budget(
                ["--params", "10"],
                ["--sparsity", "0.8"],
                "search: infeasible params, then sparsity",
            ),
            budget(
                ["--budget-bytes", "100"],
                ["--sparsity", "0.9"],
                "search: infeasible bytes, then sparsity",
            ),
        ]
        self.pool(tasks)

    # -- 8. read-only and full file systems ------------------------------------------------
    def filesystems(self, base: Path) -> None:
        cat = "8 read-only / full FS"
        mnt = self.work / "mnt"
        mounts: list[Path] = []

        def mount(name: str, size: str) -> Path | None:
            p = mnt / name
            p.mkdir(parents=True, exist_ok=True)
            r = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(p)], capture_output=True
            )
            if r.returncode != 0:
                return None
            mounts.append(p)
            return p

        probe = mount("probe", "64k")
        if probe is None:
            self.notes.append("tmpfs mounts refused: category 8 skipped")
            return
        tasks: list[Callable[[], Result | list[Result]]] = []
        srch = [
            *EMB,
            "search",
            "--dataset",
            "gowalla-mini",
            "--model",
            "mf",
            "--sparsity",
            "0.8",
            *TINY,
        ]
        try:
            for size in ("16k", "64k", "128k", "256k", "512k"):
                m = mount(f"full-{size}", size)
                assert m is not None

                def t_full(m: Path = m, size: str = size) -> list[Result]:
                    rs = [
                        run([*srch, "--out", str(m / "run")], self.wd("fs")),
                        run(
                            [*EMB, "export", str(base / "run"), "--out", str(m / "x.safetensors")],
                            self.wd("fs"),
                        ),
                    ]
                    out = []
                    for r, what in zip(rs, ("search --out", "export --out"), strict=True):
                        out.append(verdict(cat, f"{what} on a full {size} tmpfs", [r], "either"))
                    return out

                tasks.append(t_full)
            ro = mount("ro", "1m")
            assert ro is not None
            (ro / "cwd").mkdir()
            subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
            tasks.append(
                lambda: verdict(
                    cat,
                    "search --out on a read-only FS",
                    [run([*srch, "--out", str(ro / "run")], self.wd("fs"))],
                    "error",
                )
            )
            tasks.append(
                lambda: verdict(
                    cat,
                    "export --out on a read-only FS",
                    [
                        run(
                            [*EMB, "export", str(base / "run"), "--out", str(ro / "x.safetensors")],
                            self.wd("fs"),
                        )
                    ],
                    "error",
                )
            )
            tasks.append(
                lambda: verdict(
                    cat,
                    "search with a read-only working dir (default cache)",
                    [run([*srch, "--out", str(self.work / "ro-cwd-run")], ro / "cwd")],
                    "error",
                )
            )
            tasks.append(
                lambda: verdict(
                    cat,
                    "train --out under a regular file",
                    [
                        run(
                            [
                                *EMB,
                                "train",
                                "--dataset",
                                "gowalla-mini",
                                "--out",
                                "/etc/hostname/run",
                                *TINY,
                            ],
                            self.wd("fs"),
                        )
                    ],
                    "error",
                )
            )
            tasks.append(
                lambda: verdict(
                    cat,
                    "export --overwrite onto a directory",
                    [
                        run(
                            [
                                *EMB,
                                "export",
                                str(base / "run"),
                                "--out",
                                str(self.work),
                                "--overwrite",
                            ],
                            self.wd("fs"),
                        )
                    ],
                    "error",
                )
            )
            self.pool(tasks)
        finally:
            for p in reversed(mounts):
                subprocess.run(["umount", "-l", str(p)], capture_output=True)

    # -- report ----------------------------------------------------------------------------
    def table(self) -> str:
        by: dict[str, Counter[str]] = defaultdict(Counter)
        for r in self.results:
            by[r.category][("FAIL" if r.failed else r.outcome)] += 1
        lines = ["| category | cases | outcomes | failed |", "|---|---:|---|---:|"]
        tot = Counter[str]()
        for c in sorted(by):
            n = sum(by[c].values())
            f = by[c]["FAIL"]
            outs = ", ".join(f"{v} {k}" for k, v in sorted(by[c].items()) if k != "FAIL")
            lines.append(f"| {c} | {n} | {outs} | {f} |")
            tot["n"] += n
            tot["f"] += f
        lines.append(f"| **total** | **{tot['n']}** | | **{tot['f']}** |")
        return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="/tmp/embudget-probe", help="work and summary directory")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help="comma-separated category numbers")
    a = ap.parse_args()
    out = Path(a.out).resolve()
    if out == REPO or REPO in out.parents:
        ap.error("--out must be outside the repository")
    if out.exists():
        shutil.rmtree(out / "work", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    p = Probe(out, a.jobs, a.seed)
    only = set(a.only.split(",")) if a.only else set("12345678")
    t0 = time.monotonic()
    rss0 = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    base = p.base_run() if only & set("3458") else Path()
    steps: list[tuple[str, Callable[[], None]]] = [
        ("1", p.datasets),
        ("2", p.arguments),
        ("3", lambda: p.exports(base)),
        ("4", lambda: p.kills(base)),
        ("5", lambda: p.damaged(base)),
        ("6", p.bench),
        ("7", p.rerun),
        ("8", lambda: p.filesystems(base)),
    ]
    for k, fn in steps:
        if k in only:
            print(f"== category {k} ({time.monotonic() - t0:.0f} s)", flush=True)
            try:
                fn()
            except Exception as e:  # the probe's own failure: keep the other categories
                p.add(Result(f"{k} (probe)", "category aborted", f"FAIL: probe error {e!r}"))
    wall = time.monotonic() - t0
    peak = max((r.rss_mb for res in p.results for r in res.runs), default=0.0)
    print()
    print(p.table())
    print(f"\npeak child RSS {peak:.0f} MB; wall {wall:.0f} s; {len(p.results)} cases")
    for n in p.notes:
        print(f"note: {n}")
    fails = [r for r in p.results if r.failed]
    for r in fails:
        print(f"FAIL [{r.category}] {r.name}: {r.outcome}")
        if r.runs:
            print("   ", " ".join(r.runs[-1].argv)[:300])
            print("   ", r.runs[-1].stderr_tail.strip().replace("\n", "\n    ")[-400:])
    summary = {
        "wall_s": wall,
        "peak_rss_mb": peak,
        "rss_children_before_mb": rss0 / 1024,
        "notes": p.notes,
        "cases": [asdict(r) for r in p.results],
        "table": p.table(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"summary: {out / 'summary.json'}")


if __name__ == "__main__":
    main()
