"""The BET paper's published figures that ``embudget report --paper`` sets beside ours.

Qu, Chen, Nguyen, Yin, "Budgeted Embedding Table For Recommender Systems", WSDM 2024
(arXiv:2310.14884), Table 1: Gowalla and Yelp2018 × NCF, NGCF, LightGCN × 80/90/95 % sparsity,
test Recall@20 and NDCG@20 under the paper's protocol P (protocol.md §3). Only figures whose
source is named in :data:`SOURCES` are listed; every other cell of Table 1 stays blank in the
report, never estimated. Edit this module, and only this one, when more figures are confirmed.
"""

from __future__ import annotations

from typing import Any

CITATION = (
    "Qu, Chen, Nguyen, Yin, Budgeted Embedding Table For Recommender Systems, WSDM 2024 "
    "(arXiv:2310.14884), Table 1"
)

#: the cells of the paper's Table 1 (the methods embudget implements)
GRID: dict[str, tuple[Any, ...]] = {
    "datasets": ("gowalla", "yelp2018"),
    "backbones": ("ncf", "ngcf", "lightgcn"),
    "sparsities": (0.8, 0.9, 0.95),
    "methods": ("su", "sr", "bet"),
}

#: where each figure comes from; the report marks figures from "quoted" with ‡
SOURCES = {
    "spec": "bet.md §11, the specification's sanity reference values from the paper's Table 1",
    "quoted": (
        "the paper's Table 1 as quoted in the project's reproduction plan; not checked against "
        "the paper's text here"
    ),
}

#: (dataset, backbone, sparsity, method) -> {metric: value, "source": key of SOURCES}
FIGURES: dict[tuple[str, str, float, str], dict[str, Any]] = {
    ("gowalla", "lightgcn", 0.8, "su"): {"recall@20": 0.1674, "ndcg@20": 0.1400, "source": "spec"},
    ("gowalla", "lightgcn", 0.8, "bet"): {"recall@20": 0.1753, "ndcg@20": 0.1483, "source": "spec"},
    ("gowalla", "lightgcn", 0.9, "bet"): {"recall@20": 0.1620, "source": "quoted"},
    ("gowalla", "lightgcn", 0.95, "bet"): {"recall@20": 0.1374, "source": "quoted"},
}

#: (dataset, backbone, sparsity) -> the paper's BET / SU ratio of Recall@20 where it is quoted
#: (used where the paper's SU figure itself is not listed above)
BET_OVER_SU: dict[tuple[str, str, float], dict[str, Any]] = {
    ("gowalla", "lightgcn", 0.8): {"recall@20": 1.05, "source": "quoted"},
    ("gowalla", "lightgcn", 0.9): {"recall@20": 1.10, "source": "quoted"},
    ("gowalla", "lightgcn", 0.95): {"recall@20": 1.27, "source": "quoted"},
}
