"""Typed errors. Every message says what is wrong and how to fix it."""

from __future__ import annotations

from enum import Enum


class EmbudgetError(Exception):
    """Base class of every error embudget raises on bad input."""


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


class ResultError(RunDirError):
    """A results file (a run's ``results.json``, a grid's ``results.jsonl``) is missing,
    unreadable, of another schema version, or lacks or mistypes a field."""


class ExportError(EmbudgetError):
    """An exported table is missing, truncated or corrupted."""


class UnknownIdError(EmbudgetError):
    """A raw user or item id that the exported table or dataset does not know."""
