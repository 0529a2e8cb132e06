"""Data: readers, splits, dataset loading and BPR batch sampling."""

from embudget.data.dataset import SPLITS, Dataset
from embudget.data.formats import (
    RawInteractions,
    read_csv,
    read_lastfm,
    read_lightgcn,
    read_movielens,
    read_recbole,
    read_text,
)
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
    "KNOWN_DATASETS",
    "SPLITS",
    "BPRSampler",
    "Dataset",
    "RawInteractions",
    "data_search_path",
    "dataset_stats",
    "detect_format",
    "load_dataset",
    "read_csv",
    "read_lastfm",
    "read_lightgcn",
    "read_movielens",
    "read_recbole",
    "read_text",
    "resolve_dataset",
    "split_paper",
    "split_standard",
    "split_standard_single",
]
