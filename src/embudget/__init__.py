"""embudget: fit recommender embedding tables into a memory budget (BET)."""

__version__ = "0.1.0"
