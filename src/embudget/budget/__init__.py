"""Exact budgets (params and bytes) and what a table uses against them (numpy only, no torch).

The torch-dependent counts of a live model are in :mod:`embudget.budget.memory`.
"""

from embudget.budget.core import *  # noqa: F403
from embudget.budget.core import __all__ as _core_all
from embudget.budget.storage import *  # noqa: F403
from embudget.budget.storage import __all__ as _storage_all
from embudget.budget.usage import *  # noqa: F403
from embudget.budget.usage import __all__ as _usage_all

__all__ = [*_core_all, *_storage_all, *_usage_all]
