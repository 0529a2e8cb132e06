"""The typed result of one run: what ``train`` and ``search`` return and write as
``results.json``, and what the grid, the report, the CLI, the demo and the export read.

The file is versioned (``"schema"``, :data:`RESULT_SCHEMA`); reading checks the version, every
field's presence and type, and raises :class:`~embudget.errors.ResultError` naming the first
problem. This module imports no torch (numpy only, through the budget's :class:`Usage`), so
results can be read where torch is not installed.

Example::

    >>> m = Metrics({"recall@20": 0.1}, n_users_evaluated=7)
    >>> Metrics.from_dict(m.to_dict()) == m
    True
"""

from __future__ import annotations

import dataclasses
import json
import time
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from embudget.budget.usage import Usage
from embudget.errors import BudgetError, ResultError
from embudget.io import write_json

__all__ = [
    "RESULTS_FILE",
    "RESULT_SCHEMA",
    "Chosen",
    "Evaluation",
    "Kind",
    "Metrics",
    "RunResult",
    "Timing",
    "Training",
]

#: version of the ``results.json`` layout; bump it when a field changes meaning or type
RESULT_SCHEMA = 1
#: the result's file name inside a run directory
RESULTS_FILE = "results.json"

Kind = Literal["train", "search"]
T = TypeVar("T")


@dataclass(frozen=True)
class Metrics:
    """One evaluation's macro averages (``recall@20``, ``ndcg@5``, ``quality`` ...) and the
    number of users they average over."""

    means: dict[str, float]
    n_users_evaluated: int

    def get(self, name: str, default: float = float("nan")) -> float:
        """The mean of ``name``, or ``default`` when this evaluation did not compute it."""
        return self.means.get(name, default)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _dump(self)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Metrics:
        return _parse(cls, data, "metrics", "metrics")


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of each phase; a phase a run does not have is 0.

    ``pretrain`` is 0 when Θ0 came from the cache; ``train`` is the fit of a ``train`` run;
    ``total`` runs from the start of data loading to the end of the test evaluation. A run
    resumed from checkpoints counts in each phase the seconds of the processes before it too,
    so its total is at least the sum of its phases (:meth:`measured`).
    """

    data: float = 0.0
    pretrain: float = 0.0
    search: float = 0.0
    retrain: float = 0.0
    train: float = 0.0
    total: float = 0.0

    @classmethod
    def measured(cls, since: float, **phases: float) -> Timing:
        """The ``phases`` and the total from ``since`` (a :func:`time.perf_counter` reading
        at the start of the run) to now, or their sum where that is larger: a fit resumed
        from a checkpoint carries the seconds of earlier processes, which this one's clock
        never saw (a converged Gowalla SU fit: 33,051 s over its resumes, 3,658 s in the
        last process)."""
        wall = time.perf_counter() - since
        return cls(**phases, total=max(wall, sum(phases.values())))


@dataclass(frozen=True)
class Evaluation:
    """One validation during a fit: its step, the mean training loss since the previous one
    (None when validated before the first step), the validation means, and whether quality
    improved on every earlier validation."""

    step: int
    loss: float | None
    valid: dict[str, float]
    improved: bool


@dataclass(frozen=True)
class Training:
    """How a fit ended: steps taken, the step of the kept weights, whether early stopping
    ended it (False: the step cap did), and its validation curve."""

    steps: int
    best_step: int
    stopped_early: bool
    history: tuple[Evaluation, ...] = ()

    def summary(self) -> str:
        """E.g. ``12,000 steps, best at 8,000, stopped early`` (or ``ended by the step cap``)."""
        end = "stopped early" if self.stopped_early else "ended by the step cap"
        return f"{self.steps:,} steps, best at {self.best_step:,}, {end}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _dump(self)
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str = "training") -> Training:
        return _parse(cls, data, "training", source)


@dataclass(frozen=True)
class Chosen:
    """The model a search run kept: ``full`` (Θ0), or the retrained candidate with the best
    validation quality (bet.md §7.3), e.g. ``retrain-t12``, ``su``."""

    name: str
    valid_quality: float | None = None


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """Everything a finished run reports.

    Attributes:
        kind: ``train`` (a full-size backbone) or ``search`` (a method at a budget).
        method: the search method (``bet``, ``su``, ``full`` ...); None for ``train``.
        dataset, protocol, split_fingerprint: the data and its split.
        backbone: the model name (``mf``, ``lightgcn`` ...).
        seed, config_hash: the training seed and :meth:`RunConfig.hash`.
        embudget_version, torch_version, device: where and with what it ran.
        sparsity, kept_fraction: the budget as requested (None for ``train``).
        budgeted: whether the kept model was held to the budget (False for ``train`` and for
            the unbudgeted reference ``full``).
        usage: parameters and bytes used, against the resolved budget (:class:`Usage`; for
            ``full`` the whole table is the budget, for ``train`` there is none).
        storage: how the kept model's tables were held while training, compact or masked.
        valid, test: metrics of the kept model.
        timing: seconds per phase.
        training: how the kept model's fit ended: a ``train`` run's fit, a search run's
            retraining of its chosen candidate, or Θ0's for ``full``; None where it was not
            recorded (a retraining or Θ0 cache entry written before curves were kept).
        chosen: the kept candidate (``search`` runs only).
        theta0_valid: validation means of the pretrained full-size model Θ0, when one was used.
        theta0_training: how Θ0's fit ended, when one was used and its record was kept.
        n_probes: search iterations probed (0 for the baselines).
    """

    kind: Kind
    method: str | None
    dataset: str
    protocol: str
    split_fingerprint: str
    backbone: str
    seed: int
    config_hash: str
    embudget_version: str
    torch_version: str
    device: str
    sparsity: float | None
    kept_fraction: float | None
    budgeted: bool
    usage: Usage
    storage: str
    valid: Metrics
    test: Metrics
    timing: Timing
    training: Training | None = None
    chosen: Chosen | None = None
    theta0_valid: dict[str, float] | None = None
    theta0_training: Training | None = None
    n_probes: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, ``"schema"`` first."""
        return {"schema": RESULT_SCHEMA, **_dump(self)}

    @classmethod
    def from_dict(cls, data: Any, source: str = RESULTS_FILE) -> RunResult:
        """Inverse of :meth:`to_dict`.

        Raises:
            ResultError: the schema version is missing or another one, a field is missing,
                unknown or of the wrong type.
        """
        if not isinstance(data, Mapping):
            raise _error(source, "the file", f"must hold a JSON object, not {_tname(data)}")
        schema = data.get("schema")
        if schema != RESULT_SCHEMA:
            found = "no schema version" if schema is None else f"schema {schema!r}"
            raise _error(
                source,
                "the file",
                f"has {found}, this embudget reads schema {RESULT_SCHEMA}; it was written by "
                "another embudget version: rerun the run (or read it with that version)",
            )
        return _parse(cls, {k: v for k, v in data.items() if k != "schema"}, "", source)

    def write(self, path: str | Path) -> None:
        """Write ``results.json`` atomically (a crash never leaves half a file)."""
        write_json(path, self.to_dict())

    @classmethod
    def read(cls, path: str | Path) -> RunResult:
        """Read and validate a ``results.json``.

        Raises:
            ResultError: the file is missing, unreadable, not JSON, or not a valid result.
        """
        p = Path(path)
        if not p.is_file():
            raise ResultError(f"{p} does not exist; the run has not finished")
        try:
            text = p.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise ResultError(f"{p} cannot be read ({e})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ResultError(
                f"{p} is damaged (not valid JSON: {e}); delete it and rerun with --resume to "
                "redo the run's last stage, or start the run again with --overwrite"
            ) from None
        return cls.from_dict(data, str(p))


# --------------------------------------------------------------------------------------------
# JSON conversion, driven by the dataclass field types
# --------------------------------------------------------------------------------------------
def _error(source: str, where: str, problem: str) -> ResultError:
    return ResultError(f"{source}: {where or 'the result'} {problem}")


def _tname(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _dump(value: Any) -> Any:
    if isinstance(value, Usage):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _dump(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_dump(v) for v in value]
    return value


def _parse(tp: Any, value: Any, where: str, source: str) -> Any:
    """``value`` (from JSON) as type ``tp``; raises ResultError naming ``where``."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = (a for a in args if a is not type(None))
        return _parse(inner, value, where, source)
    if origin is Literal:
        if value not in typing.get_args(tp):
            choices = ", ".join(map(repr, typing.get_args(tp)))
            raise _error(source, where, f"is {value!r}; expected one of {choices}")
        return value
    if origin is tuple:  # tuple[X, ...]: a JSON list
        (item_type, _) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise _error(source, where, f"must be a list, not {_tname(value)}")
        return tuple(_parse(item_type, v, f"{where}[{i}]", source) for i, v in enumerate(value))
    if origin is dict:
        key_type, value_type = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise _error(source, where, f"must be an object, not {_tname(value)}")
        return {
            _parse(key_type, k, where, source): _parse(value_type, v, f"{where}.{k}", source)
            for k, v in value.items()
        }
    if tp is Usage:
        try:
            return Usage.from_dict(value)
        except BudgetError as e:
            raise _error(source, where, f"is not a valid usage record ({e})") from None
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _parse_fields(tp, value, where, source)
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and isinstance(value, tp):
        if tp is int and isinstance(value, bool):
            raise _error(source, where, "must be an integer, not a boolean")
        return value
    raise _error(source, where, f"must be {getattr(tp, '__name__', tp)}, not {_tname(value)}")


def _parse_fields(cls: type[T], value: Any, where: str, source: str) -> T:
    if not isinstance(value, Mapping):
        raise _error(source, where, f"must be an object, not {_tname(value)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise _error(source, where, f"has unknown field(s) {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        at = f"{where}.{name}" if where else name
        if name not in value:
            if f.default is dataclasses.MISSING:
                raise _error(source, at, "is missing")
            continue
        kwargs[name] = _parse(hints[name], value[name], at, source)
    return cls(**kwargs)
