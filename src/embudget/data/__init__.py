"""Data: readers (every name of :mod:`embudget.data.formats`), splits, dataset loading and BPR
batch sampling."""

from embudget.data.dataset import SPLITS, Dataset
from embudget.data.formats import *  # noqa: F403
from embudget.data.formats import __all__ as _formats_all
from embudget.data.load import (
    KNOWN_DATASETS,
    data_search_path,
    dataset_stats,
    detect_format,
    load_dataset,
    resolve_dataset,
)
from embudget.data.sampling import BPRSampler
from embudget.data.split import split_paper, split_standard, split_standard_single

__all__ = [
    *_formats_all,
    "KNOWN_DATASETS",
    "SPLITS",
    "BPRSampler",
    "Dataset",
    "data_search_path",
    "dataset_stats",
    "detect_format",
    "load_dataset",
    "resolve_dataset",
    "split_paper",
    "split_standard",
    "split_standard_single",
]
