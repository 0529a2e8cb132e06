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

from embudget.errors import ConfigError, RunDirError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it over ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


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


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def append_jsonl(path: str | Path, obj: Mapping[str, Any]) -> None:
    """Append one JSON line and flush it to disk (append-only logs are not renamed)."""
    with open(path, "a") as f:
        f.write(json.dumps(obj) + "\n")
        f.flush()
        os.fsync(f.fileno())


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def save_torch(path: str | Path, obj: Any) -> None:
    """Save a dict of tensors and plain Python values (loadable with weights_only=True)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    import torch

    return torch.load(path, map_location=map_location, weights_only=True)


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
