"""Exact budgets (params and bytes) and what a table uses against them."""

from embudget.budget.core import *  # noqa: F403
from embudget.budget.core import __all__ as _core_all

__all__ = list(_core_all)
