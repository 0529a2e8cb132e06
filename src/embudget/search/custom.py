"""BET's search over a user's model: its :class:`~embudget.tables.budgeted.BudgetedEmbedding`
tables mapped onto the sampler's two sides, and a searcher that probes the user's model.

**Tables and sides.** The bounded sampler (bet.md §3.2) splits the budget between two groups of
rows, users and items, and the frequency-rank assignment (§3.3) gives the larger sizes to the
more popular rows of each group. A user's model may have any number of budgeted tables; they are
mapped onto the two groups: with two tables (a two-tower model's user and item tables) the first
is the user side and the second the item side; with more, the first table is one side and the
rest are concatenated on the other (``sides`` chooses another grouping). Within a side rows of
different tables compete for size by their popularity counts, so counts on a side should be on
one scale (e.g. training occurrences). Every row of every table is one entity of the budget:
B = ⌊k · d_max · Σ rows⌋, and every table must have the same ``embedding_dim`` (d_max).

**Probe.** :class:`ModelSearcher` is the loop's :class:`~embudget.search.loop.ActionSearcher`
for such a model: a probe deep-copies the pretrained full-size model Θ0, applies the action's
sizes, fine-tunes it with the user's loss for a fixed number of steps (fresh Adam) and measures
the user's evaluation; the fitness is Q / Q0 (bet.md §6).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from torch import nn

from embudget.config import RunConfig
from embudget.errors import ConfigError
from embudget.search.actions import Action, RankAssignment
from embudget.search.loop import ActionSearcher
from embudget.search.predictor import FitnessPredictor
from embudget.search.sampler import BoundedSampler
from embudget.seeds import int_seed
from embudget.tables.budgeted import BudgetedEmbedding
from embudget.training.custom import Batches, EvaluateFn, LossFn, measure, train_steps

__all__ = ["ModelSearcher", "TableLayout", "budgeted_tables"]

#: Which tables form the user side and which the item side, by name.
Sides = tuple[Sequence[str], Sequence[str]]


def budgeted_tables(model: nn.Module) -> list[tuple[str, BudgetedEmbedding]]:
    """The model's :class:`BudgetedEmbedding` submodules with their names, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, BudgetedEmbedding)]


@dataclass(frozen=True)
class TableLayout:
    """A model's budgeted tables and their grouping into the sampler's two sides.

    Attributes:
        names: the tables' module names (``model.get_submodule(name)``), in module order.
        rows: rows per table.
        d_max: the common ``embedding_dim``.
        sides: table indices of the user side and of the item side (the item side is empty
            for a one-table model, which only SU, SR and full support).
    """

    names: tuple[str, ...]
    rows: tuple[int, ...]
    d_max: int
    sides: tuple[tuple[int, ...], tuple[int, ...]]

    @classmethod
    def of(cls, model: nn.Module, sides: Sides | None = None) -> TableLayout:
        """The layout of ``model``'s budgeted tables.

        Raises:
            ConfigError: no budgeted table, tables of different ``embedding_dim``, or
                ``sides`` that do not name every table exactly once.
        """
        tables = budgeted_tables(model)
        if not tables:
            raise ConfigError(
                f"{type(model).__name__} has no embudget.BudgetedEmbedding table; build the "
                "embedding tables to budget as BudgetedEmbedding(num_rows, d_max) (a drop-in for "
                "nn.Embedding)"
            )
        names = tuple(n for n, _ in tables)
        dims = {n: t.embedding_dim for n, t in tables}
        if len(set(dims.values())) != 1:
            raise ConfigError(
                f"every budgeted table needs the same embedding_dim (d_max), got {dims}"
            )
        if sides is None:
            groups: tuple[tuple[int, ...], tuple[int, ...]] = (
                (0,),
                tuple(range(1, len(names))),
            )
        else:
            groups = cls._groups(names, sides)
        return cls(names, tuple(t.num_embeddings for _, t in tables), tables[0][1].d_max, groups)

    @staticmethod
    def _groups(names: tuple[str, ...], sides: Sides) -> tuple[tuple[int, ...], tuple[int, ...]]:
        if len(sides) != 2 or any(isinstance(s, str) for s in sides):
            raise ConfigError("sides must be two lists of table names: (user side, item side)")
        given = [str(n) for side in sides for n in side]
        unknown = sorted(set(given) - set(names))
        missing = sorted(set(names) - set(given))
        if unknown or missing or len(given) != len(set(given)) or not sides[0]:
            raise ConfigError(
                f"sides must name every budgeted table exactly once, the first side non-empty; "
                f"tables: {list(names)}; unknown {unknown}, missing {missing}"
            )
        return (
            tuple(names.index(str(n)) for n in sides[0]),
            tuple(names.index(str(n)) for n in sides[1]),
        )

    @property
    def n_users(self) -> int:
        """Rows on the user side."""
        return sum(self.rows[i] for i in self.sides[0])

    @property
    def n_items(self) -> int:
        """Rows on the item side."""
        return sum(self.rows[i] for i in self.sides[1])

    def counts(self, popularity: Mapping[str, npt.ArrayLike]) -> tuple[np.ndarray, np.ndarray]:
        """The popularity counts of each side (tables concatenated in side order).

        Raises:
            ConfigError: a table without counts, an unknown name, a wrong length, or counts
                that are not finite and non-negative.
        """
        unknown = sorted(set(popularity) - set(self.names))
        missing = [n for n in self.names if n not in popularity]
        if unknown or missing:
            raise ConfigError(
                f"popularity needs one count array per budgeted table {list(self.names)}; "
                f"missing {missing}, unknown {unknown}"
            )
        arrays = []
        for name, rows in zip(self.names, self.rows, strict=True):
            a = np.asarray(popularity[name])
            if a.shape != (rows,) or a.dtype.kind not in "iuf":
                raise ConfigError(
                    f"popularity[{name!r}] must be {rows} numbers (one per row), got "
                    f"{a.dtype} {a.shape}"
                )
            f = a.astype(np.float64)
            if not np.all(np.isfinite(f)) or (f.size and float(f.min()) < 0):
                raise ConfigError(f"popularity[{name!r}] must be finite and non-negative counts")
            arrays.append(f)
        return self._join(arrays)

    def _join(self, arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        out = []
        for side in self.sides:
            parts = [arrays[i] for i in side]
            out.append(np.concatenate(parts) if parts else np.zeros(0, arrays[0].dtype))
        return out[0], out[1]

    def side_sizes(self, sizes: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Per-table sizes as the two sides' arrays."""
        return self._join([np.asarray(sizes[n], np.int64) for n in self.names])

    def table_sizes(self, user_sizes: np.ndarray, item_sizes: np.ndarray) -> dict[str, np.ndarray]:
        """The two sides' sizes split back into one array per table."""
        out: dict[str, np.ndarray] = {}
        for side, sizes in zip(self.sides, (user_sizes, item_sizes), strict=True):
            start = 0
            for i in side:
                out[self.names[i]] = np.asarray(sizes[start : start + self.rows[i]], np.int64)
                start += self.rows[i]
        return {n: out[n] for n in self.names}

    def apply(self, model: nn.Module, sizes: Mapping[str, np.ndarray] | None) -> None:
        """Set every budgeted table's sizes (None: every row at full size)."""
        for name in self.names:
            table = model.get_submodule(name)
            assert isinstance(table, BudgetedEmbedding)
            table.set_sizes(None if sizes is None else sizes[name])

    def read(self, model: nn.Module) -> dict[str, np.ndarray]:
        """The sizes the model's tables hold now."""
        out = {}
        for name in self.names:
            table = model.get_submodule(name)
            assert isinstance(table, BudgetedEmbedding)
            out[name] = table.sizes.detach().cpu().numpy().astype(np.int64)
        return out


class ModelSearcher(ActionSearcher):
    """The search loop's probe of a user's model (bet.md §6).

    Args:
        cfg: the loop's settings (iterations, candidates, predictor updates, seed).
        theta0: the pretrained full-size model; every probe fine-tunes a deep copy of it.
        layout: the model's tables and sides.
        batches, loss, evaluate: the user's training data, loss and validation.
        steps, lr: the probe's fine-tuning.
        q0: Θ0's quality, ``evaluate(theta0)`` (positive).
    """

    def __init__(
        self,
        cfg: RunConfig,
        sampler: BoundedSampler,
        assignment: RankAssignment,
        predictor: FitnessPredictor | None,
        random_select: bool,
        *,
        theta0: nn.Module,
        layout: TableLayout,
        batches: Batches,
        loss: LossFn,
        evaluate: EvaluateFn,
        steps: int,
        lr: float,
        q0: float,
    ) -> None:
        if not q0 > 0:
            raise ConfigError(
                f"evaluate(model) gave {q0} for the pretrained full-size model; the fitness "
                "Q / Q0 needs a positive quality (train longer, or evaluate a score where "
                "higher is better and 0 is the worst)"
            )
        super().__init__(cfg, sampler, assignment, q0, predictor, random_select)
        self.theta0 = theta0
        self.layout = layout
        self.batches, self.loss, self.evaluate = batches, loss, evaluate
        self.steps, self.lr = steps, lr

    def probe(self, action: Action, t: int) -> tuple[float, float, float, float]:
        t0 = time.perf_counter()
        model = copy.deepcopy(self.theta0)
        us, vs = self.assignment.sizes(action)
        self.layout.apply(model, self.layout.table_sizes(us, vs))
        if self.steps > 0:
            train_steps(
                model,
                self.batches,
                self.loss,
                steps=self.steps,
                lr=self.lr,
                seed=int_seed(self.cfg.seed, "probe", t),
                stream="probe",
            )
        t1 = time.perf_counter()
        q = measure(model, self.evaluate)
        return q / self.q0, q, t1 - t0, time.perf_counter() - t1
