"""embudget: fit recommender embedding tables into a memory budget (BET)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "BudgetedEmbedding",
    "SearchOptions",
    "__version__",
    "load",
    "register_backbone",
    "search_sizes",
]

if TYPE_CHECKING:
    from embudget.deploy.export import load
    from embudget.models.registry import register_backbone
    from embudget.pipeline.custom import SearchOptions, search_sizes
    from embudget.tables.budgeted import BudgetedEmbedding


def __getattr__(name: str) -> Any:
    # Lazy, so that ``import embudget`` (and the CLI's --help) does not import torch.
    if name == "load":
        from embudget.deploy.export import load

        return load
    if name == "BudgetedEmbedding":
        from embudget.tables.budgeted import BudgetedEmbedding

        return BudgetedEmbedding
    if name in ("search_sizes", "SearchOptions"):
        from embudget.pipeline import custom

        return getattr(custom, name)
    if name == "register_backbone":
        from embudget.models.registry import register_backbone

        return register_backbone
    raise AttributeError(f"module 'embudget' has no attribute {name!r}")
