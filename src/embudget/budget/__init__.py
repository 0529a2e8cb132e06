"""Exact budgets (params and bytes) and what a table uses against them (numpy only, no torch).

The usage of a live model: :meth:`Usage.of_sizes` of its sizes
(:func:`embudget.pipeline.rundir.model_sizes`).
"""

from embudget.budget.core import *  # noqa: F403
from embudget.budget.core import __all__ as _core_all
from embudget.budget.storage import *  # noqa: F403
from embudget.budget.storage import __all__ as _storage_all
from embudget.budget.usage import *  # noqa: F403
from embudget.budget.usage import __all__ as _usage_all

__all__ = [*_core_all, *_storage_all, *_usage_all]
