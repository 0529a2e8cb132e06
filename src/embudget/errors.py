"""Typed errors. Every message says what is wrong and how to fix it."""

from __future__ import annotations

import errno as errno_module
import os
from enum import Enum
from pathlib import Path


class EmbudgetError(Exception):
    """Base class of every error embudget raises on bad input.

    Errors cross process boundaries (the demo's and Ray's worker processes), so they unpickle
    without calling ``__init__``, whose arguments differ between subclasses: the message and
    the attributes are restored as they were.
    """

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(
    cls: type[EmbudgetError], args: tuple[object, ...], state: dict[str, object]
) -> EmbudgetError:
    err = cls.__new__(cls, *args)
    err.args = args
    err.__dict__.update(state)
    return err


class ConfigError(EmbudgetError):
    """Unknown option, wrong type, or an impossible combination of settings."""


class DataFormatError(EmbudgetError):
    """A data file is missing, malformed or empty.

    Attributes:
        path: the offending file (if any).
        line: 1-based line number (if known).
    """

    def __init__(self, message: str, path: str | None = None, line: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f", line {line}"
            where += ": "
        super().__init__(where + message)
        self.path = path
        self.line = line


class BudgetErrorType(Enum):
    INFEASIBLE = "infeasible"
    INVALID = "invalid"
    VIOLATED = "violated"


class BudgetError(EmbudgetError):
    """A budget that cannot be met, or sizes that break (I1)/(I2)."""

    def __init__(self, message: str, error_type: BudgetErrorType) -> None:
        super().__init__(f"BudgetError[{error_type.name}]: {message}")
        self.error_type = error_type


class SamplerError(EmbudgetError):
    """The bounded sampler exhausted its attempts (with on_exhausted='error')."""


class RunDirError(EmbudgetError):
    """A run directory exists and would be overwritten, or is not a valid run."""


class DamagedFileError(RunDirError):
    """A file a run reads back (a checkpoint, the search state, a log, a cached model, the
    run's config) is empty, truncated or not of its format.

    Attributes:
        path: the damaged file.
        problem: what is wrong with it.
        fix: what to do about it (delete the file, or start the run again with --overwrite).
    """

    def __init__(self, path: str | Path, problem: str, fix: str) -> None:
        super().__init__(f"{path} is damaged ({problem}); {fix}")
        self.path = str(path)
        self.problem = problem
        self.fix = fix


class ResultError(RunDirError):
    """A results file (a run's ``results.json``, a grid's ``results.jsonl``) is missing,
    unreadable, of another schema version, or lacks or mistypes a field."""


class ExportError(EmbudgetError):
    """An exported table is missing, truncated or corrupted."""


class UnknownIdError(EmbudgetError):
    """A raw user or item id that the exported table or dataset does not know."""


class FileAccessError(EmbudgetError):
    """The operating system refused to read or write a file: permission denied, read-only or
    full file system, a regular file where a directory is needed, a directory where a file is
    needed. Built from the :class:`OSError` by :func:`from_os_error`.

    Attributes:
        path: the file or directory concerned ("" if the OS did not say).
        errno: the OS error number (None if unknown).
        reason: what went wrong, in words.
    """

    def __init__(self, path: str, reason: str, hint: str = "", errno: int | None = None) -> None:
        where = f"{path}: " if path else ""
        super().__init__(f"{where}{reason}" + (f"; {hint}" if hint else ""))
        self.path = path
        self.reason = reason
        self.errno = errno


#: errno name -> (reason, hint) of the OS errors a user can fix.
_OS_REASONS: dict[str, tuple[str, str]] = {
    "EACCES": (
        "permission denied",
        "check the owner and mode of the file and of its directory (ls -l), or choose another path",
    ),
    "EPERM": (
        "operation not permitted",
        "check the owner and mode of the file and of its directory (ls -l), or choose another path",
    ),
    "EROFS": ("read-only file system", "choose a writable location (--out, cache_dir)"),
    "ENOSPC": ("no space left on device", "free some space or choose another location"),
    "EDQUOT": ("disk quota exceeded", "free some space or choose another location"),
    "EFBIG": ("file too large for this file system", "choose another location"),
    "ENOTDIR": (
        "a component of this path is a regular file, not a directory",
        "choose a path whose parent folders are directories",
    ),
    "EISDIR": ("is a directory, expected a file", "pass a file path"),
    "ENOENT": ("no such file or directory", "check the path"),
    "EEXIST": ("already exists", "remove it or choose another path"),
    "ENAMETOOLONG": ("file name too long", "choose a shorter path"),
    "ELOOP": ("too many levels of symbolic links", "check the symbolic links on this path"),
    "EMFILE": ("too many open files", "raise the open-file limit (ulimit -n)"),
    "ENFILE": ("too many open files in the system", "close other programs and retry"),
    "EBUSY": ("device or resource busy", "retry when it is free"),
    "ETXTBSY": ("file busy", "retry when it is free"),
    "EXDEV": ("cannot move across file systems", "keep temporary and target on one device"),
    "EIO": ("input/output error", "check the disk (dmesg) and retry"),
    "EINVAL": ("not supported by this file or file system", "choose another location"),
}


def from_os_error(err: OSError, path: str | os.PathLike[str] | None = None) -> FileAccessError:
    """The typed error for ``err``: the path (``path``, else the one the OS named), the reason
    in words and a hint. The one mapping from OS errors to embudget errors; the command line
    turns it into exit code 2."""
    name = errno_module.errorcode.get(err.errno or -1, "")
    reason, hint = _OS_REASONS.get(name, (err.strerror or str(err), ""))
    if path is None:
        named = err.filename if err.filename is not None else err.filename2
        path = os.fsdecode(named) if isinstance(named, str | bytes | os.PathLike) else ""
    return FileAccessError(os.fspath(path), reason, hint, err.errno)
