"""Atomic, pickle-free persistence and run directories.

Everything a user relies on is written to a temporary file in the same directory and then
renamed over the target, so a crash never leaves a half-written file. Loading never unpickles:
``torch.load(weights_only=True)``, ``np.load(allow_pickle=False)``, JSON, safetensors.

Only the torch-specific functions (:func:`save_torch`, :func:`load_torch`, :func:`environment`,
:func:`resolve_device`) import torch, when called: the rest serves torch-free modules (the
result file, the report).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embudget.errors import ConfigError, DamagedFileError, RunDirError, from_os_error

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it over ``target`` on success.

    The finished file gets the mode a plain ``open`` would give it (0666 less the umask;
    ``mkstemp`` creates 0600), so a group or a serving account can read what the umask
    allows. The file is flushed to disk before the rename, and the directory after it, so a
    power cut leaves the old file or the new one.

    Raises:
        FileAccessError: the operating system refused (permission denied, read-only or full
            file system, a regular file on the path, a directory at ``target``), naming
            ``target``.
    """
    target = Path(target)
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:  # a regular file where a parent folder should be
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(target)) from None
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    except OSError as e:
        raise from_os_error(e, target) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        _fsync(tmp_path)
        os.replace(tmp_path, target)
        _fsync_dir(target.parent)
    except OSError as e:
        raise from_os_error(e, target) from None
    finally:
        with contextlib.suppress(OSError):  # never hide the error that got here
            tmp_path.unlink(missing_ok=True)


_UMASK: int | None = None


def _umask() -> int:
    """The process umask: from /proc where it can be read without changing it, else by
    setting and restoring it once (cached)."""
    global _UMASK
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return _UMASK


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Flush a directory's entries (the rename); a no-op where directories cannot be opened
    (Windows) or synced (some network file systems)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def file_lock(path: str | Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive advisory lock on ``path`` (created if missing) for the ``with`` block.

    Yields True when the lock is held; with ``wait=False`` yields False at once if another
    process (or another open of the file) holds it. The operating system drops the lock when
    its holder exits, however it exits, so a killed run never leaves a stale lock. Where
    ``fcntl`` does not exist (Windows) nothing is locked and True is yielded.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield True
        return
    with open(path, "a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: str | Path, data: bytes | memoryview) -> None:
    """Write ``data`` atomically (e.g. ``safetensors.torch.save(...)``: serialisers that
    write files themselves may report a full disk as something other than an OSError)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def damage_fix(path: str | Path) -> str:
    """What to do about a damaged file of a run, unless the caller knows better: a training
    checkpoint can be deleted (that training restarts from its first step); any other file is
    written again by redoing the run's last stage, or the whole run."""
    name = Path(path).name
    if name.endswith(".ckpt.pt") or name == "checkpoint.pt":
        return (
            "delete it to restart that training from its first step (with --resume), or start "
            "the run again with --overwrite"
        )
    return (
        "start the run again with --overwrite (in a finished run, deleting results.json and "
        "rerunning with --resume writes the final files again)"
    )


def read_json(path: str | Path, *, fix: str | None = None) -> Any:
    """The JSON document in ``path``.

    Raises:
        DamagedFileError: the file is not UTF-8 or not one complete JSON document.
    """
    data = Path(path).read_bytes()
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DamagedFileError(path, f"not valid JSON: {e}", fix or damage_fix(path)) from None


def read_jsonl(
    path: str | Path, *, torn_tail_ok: bool = False, fix: str | None = None
) -> list[dict[str, Any]]:
    """The JSON objects of an append-only log, one a line (missing file: none).

    A line is complete when it ends with a newline and holds a JSON object. With
    ``torn_tail_ok`` an incomplete last line (a write cut short) is left out; otherwise, and
    for an incomplete line anywhere else, the file is damaged.

    Raises:
        DamagedFileError: naming the file and the first bad line.
    """
    p = Path(path)
    if not p.exists():
        return []
    lines = p.read_bytes().split(b"\n")
    torn = lines.pop()  # the bytes after the last newline: empty when the file ends with one
    records: list[dict[str, Any]] = []
    for i, raw in enumerate(lines):
        try:
            rec = json.loads(raw.decode("utf-8"))
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except (UnicodeDecodeError, ValueError) as e:
            if torn_tail_ok and not torn and i == len(lines) - 1:
                break
            raise DamagedFileError(p, f"line {i + 1}: {e}", fix or damage_fix(path)) from None
        records.append(rec)
    if torn and not torn_tail_ok:
        raise DamagedFileError(
            p, f"line {len(lines) + 1} is cut short (no newline)", fix or damage_fix(path)
        )
    return records


def append_jsonl(path: str | Path, obj: Mapping[str, Any]) -> None:
    """Append one JSON line and flush it to disk (append-only logs are not renamed).

    Raises:
        FileAccessError: the operating system refused the write.
    """
    try:
        with open(path, "a") as f:
            f.write(json.dumps(obj) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise from_os_error(e, path) from None


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]


def load_npz(path: str | Path, *, fix: str | None = None) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file (never unpickling).

    Raises:
        DamagedFileError: the file is empty, truncated or not an npz of plain arrays.
    """
    data = Path(path).read_bytes()
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:  # numpy and zipfile raise many types for a damaged archive
        raise DamagedFileError(
            path, f"not a readable npz file: {_reason(e)}", fix or damage_fix(path)
        ) from None


def save_torch(path: str | Path, obj: Any) -> None:
    """Save a dict of tensors and plain Python values (loadable with weights_only=True)."""
    import torch

    # serialised in memory first: torch's own file writer reports a full disk as a
    # RuntimeError, a plain write as the OSError it is
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getbuffer())


def load_torch(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    *,
    fix: str | None = None,
    data: bytes | None = None,
) -> Any:
    """What :func:`save_torch` wrote to ``path`` (``data``: the file's bytes, already read).

    Raises:
        DamagedFileError: the file is empty, truncated or not a weights-only torch file.
    """
    import torch

    if data is None:
        data = Path(path).read_bytes()
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises EOFError, RuntimeError, OSError, UnpicklingError
        raise DamagedFileError(
            path, f"not a readable torch file: {_reason(e)}", fix or damage_fix(path)
        ) from None


def load_safetensors(
    path: str | Path, device: str = "cpu", *, fix: str | None = None
) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file that this package wrote.

    Raises:
        DamagedFileError: the file is empty, truncated or not a safetensors file.
    """
    from safetensors.torch import load

    data = Path(path).read_bytes()
    try:
        return {k: v.to(device) for k, v in load(data).items()}
    except Exception as e:  # safetensors raises its own error type
        raise DamagedFileError(
            path, f"not a readable safetensors file: {_reason(e)}", fix or damage_fix(path)
        ) from None


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def environment(device: torch.device | str) -> dict[str, Any]:
    """Versions, device and threads, recorded with every run."""
    import torch

    from embudget import __version__

    dev = torch.device(device)
    info: dict[str, Any] = {
        "embudget_version": __version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(dev),
    }
    if dev.type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(dev)
    return info


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; an unavailable CUDA request is a clear error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"device {name!r} is not valid; use cpu, cuda, cuda:N or auto") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return dev


class RunDir:
    """A run directory: refuses to overwrite an existing run unless asked."""

    MARKER = "config.yaml"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, path: str | Path, overwrite: bool = False, resume: bool = False) -> RunDir:
        p = Path(path)
        if p.exists() and not p.is_dir():
            raise RunDirError(f"{p} exists and is not a directory; choose another --out")
        if p.exists() and any(p.iterdir()) and not (overwrite or resume):
            raise RunDirError(
                f"run directory {p} already holds files; nothing was changed. Use another --out, "
                "--resume to continue that run, or --overwrite to replace it"
            )
        if resume and not (p / cls.MARKER).is_file():
            raise RunDirError(f"cannot resume: {p} holds no run ({cls.MARKER} is missing)")
        if overwrite and not resume and p.exists() and any(p.iterdir()):
            # Stale checkpoints or results must not leak into the new run; but only ever
            # delete what is recognisably an embudget run.
            if not (p / cls.MARKER).is_file():
                raise RunDirError(
                    f"--overwrite refused: {p} is not an embudget run directory "
                    f"({cls.MARKER} is missing); choose another --out"
                )
            shutil.rmtree(p)
        p.mkdir(parents=True, exist_ok=True)
        return cls(p)

    def file(self, name: str) -> Path:
        return self.path / name

    def attach_log(self, name: str = "run.log") -> logging.Handler:
        """Route the embudget loggers to RUN_DIR/run.log (detach with ``detach_log``)."""
        handler = logging.FileHandler(self.file(name))
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger = logging.getLogger("embudget")
        logger.addHandler(handler)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
        return handler

    @staticmethod
    def detach_log(handler: logging.Handler) -> None:
        logging.getLogger("embudget").removeHandler(handler)
        handler.close()
