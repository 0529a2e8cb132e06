"""Data: readers (every name of :mod:`embudget.data.formats`, and parquet), splits (random,
temporal, leave-last-out), the k-core filter, dataset loading and BPR batch sampling."""

from embudget.data.dataset import SPLITS, Dataset
from embudget.data.filters import kcore_masks
from embudget.data.formats import *  # noqa: F403
from embudget.data.formats import __all__ as _formats_all
from embudget.data.load import (
    KNOWN_DATASETS,
    data_search_path,
    dataset_stats,
    detect_format,
    load_configured,
    load_dataset,
    resolve_dataset,
)
from embudget.data.parquet import read_parquet
from embudget.data.sampling import BPRSampler
from embudget.data.split import split_paper, split_standard, split_standard_single
from embudget.data.temporal import split_leave_last_out, split_temporal

__all__ = [
    *_formats_all,
    "KNOWN_DATASETS",
    "SPLITS",
    "BPRSampler",
    "Dataset",
    "data_search_path",
    "dataset_stats",
    "detect_format",
    "kcore_masks",
    "load_configured",
    "load_dataset",
    "read_parquet",
    "resolve_dataset",
    "split_leave_last_out",
    "split_paper",
    "split_standard",
    "split_standard_single",
    "split_temporal",
]
