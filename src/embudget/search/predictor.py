"""Fitness predictors over actions in canonical form, their online trainer, and selection.

One import point for the three modules that implement them:

- :mod:`embudget.search.predictor_nets`: :class:`DeepSetsPredictor` (bet.md §4.3–4.5),
  :class:`SimplePredictor` (BET-simple, bet.md §9), :func:`ranked_features`,
  :func:`stack_hists`.
- :mod:`embudget.search.predictor_trainer`: :class:`PredictorTrainer`, online training with a
  never-evicting replay (bet.md §4.6).
- :mod:`embudget.search.selection`: :func:`greedy`, :func:`nearest`, the selection rules of
  bet.md §5.
"""

from embudget.search.predictor_nets import (
    ELEMENT_DIM,
    SET_DIM,
    SIMPLE_HIDDEN,
    DeepSetsPredictor,
    FitnessPredictor,
    HasHists,
    HistLike,
    SimplePredictor,
    ranked_features,
    stack_hists,
)
from embudget.search.predictor_trainer import PredictorTrainer
from embudget.search.selection import greedy, nearest

__all__ = [
    "ELEMENT_DIM",
    "SET_DIM",
    "SIMPLE_HIDDEN",
    "DeepSetsPredictor",
    "FitnessPredictor",
    "HasHists",
    "HistLike",
    "PredictorTrainer",
    "SimplePredictor",
    "greedy",
    "nearest",
    "ranked_features",
    "stack_hists",
]
