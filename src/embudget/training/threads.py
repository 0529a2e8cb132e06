"""How many intra-op threads a run uses when the config leaves ``threads`` unset.

Torch defaults to one thread per core. Measured on the 2-core machine (BENCHMARKS.md, "Small
runs", ``benchmarks/bench_overhead.py --threads-sweep``), a second thread for a 10,000-triple
step at d = 128

- buys 1.4-1.75x when the other core is idle (Last.fm MF 14.6 -> 9.7 ms, Gowalla LightGCN
  351 -> 199 ms), and nothing for the small steps of the golden runs (256 triples, d = 32);
- costs 2-28x as soon as another process runs on the other core: OpenMP's threads wait for
  each other at every one of a step's few dozen passes (Last.fm MF 69 -> 296 ms, Gowalla
  LightGCN 356 -> 1,112 ms), and sweeps minutes apart flipped between the two.

So :func:`auto_threads` leaves one core to the rest of the machine, and below
:data:`WORK_PER_THREAD` floats touched per step (:func:`step_work`: 4e7-9e7 for Last.fm, 9e8
for Gowalla LightGCN) uses one thread: small steps cannot amortise the synchronisation. On a
2-core machine that is always one thread; on a bigger one, large steps get one more thread per
multiple of the threshold. The count depends only on the config, the data and the core count,
not on the machine's load, because it changes the last bits of multi-threaded reductions: set
``threads`` explicitly to compare runs across machines (the golden runs use 1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from embudget.models.registry import GRAPH_MODELS

if TYPE_CHECKING:
    from embudget.config import RunConfig
    from embudget.data.dataset import Dataset

#: Floats touched per step (:func:`step_work`) per thread: below it one thread.
WORK_PER_THREAD = 5e8


def step_work(
    model: str,
    n_users: int,
    n_items: int,
    nnz: int,
    batch_users: int,
    d_max: int,
    n_layers: int = 3,
) -> float:
    """Rough floats touched by one BPR training step (a size, not a time).

    ~10 passes over the three gathered ``(batch, d)`` row blocks, ~6 over the tables (gradient
    and Adam's three state tensors), and for graph backbones each layer's sparse product
    forward and backward over the ``2 · nnz`` adjacency entries and the ``(N, d)`` table.
    NCF keeps two tables per entity and an MLP; it counts double.
    """
    rows = n_users + n_items
    work = 30.0 * batch_users * d_max + 6.0 * rows * d_max
    if model in GRAPH_MODELS:
        work += 2.0 * n_layers * (2.0 * nnz + rows) * d_max
    if model == "ncf":
        work *= 2.0
    return work


def auto_threads(work: float, cores: int | None = None) -> int:
    """Threads for a step of ``work`` floats: 1 + ⌊work / WORK_PER_THREAD⌋, at most one less
    than ``cores`` (default: torch's default thread count, one per core), at least 1."""
    cap = max(1, (cores if cores is not None else default_threads()) - 1)
    return min(cap, 1 + int(work // WORK_PER_THREAD))


_DEFAULT_THREADS: int | None = None


def default_threads() -> int:
    """Torch's own default (one per core), remembered before the first change."""
    global _DEFAULT_THREADS
    if _DEFAULT_THREADS is None:
        _DEFAULT_THREADS = torch.get_num_threads()
    return _DEFAULT_THREADS


def apply_threads(
    requested: int | None,
    *,
    model: str,
    n_users: int,
    n_items: int,
    nnz: int,
    batch_users: int,
    d_max: int,
    n_layers: int = 3,
) -> int:
    """Set torch's intra-op threads: ``requested`` if given, else :func:`auto_threads` of the
    run's :func:`step_work`. Returns the count set."""
    if requested:
        n = int(requested)
    else:
        work = step_work(model, n_users, n_items, nnz, batch_users, d_max, n_layers)
        n = auto_threads(work)
    default_threads()  # remember torch's default before changing it
    torch.set_num_threads(n)
    return n


def apply_run_threads(cfg: RunConfig, dataset: Dataset | None) -> int:
    """:func:`apply_threads` for a run: ``cfg.threads``, or (unset) the count for its model,
    data, batch and ``d_max``. Without a dataset an unset count stays torch's default."""
    if not cfg.threads and dataset is None:
        return torch.get_num_threads()
    m = cfg.model
    return apply_threads(
        cfg.threads,
        model=m.name,
        n_users=dataset.n_users if dataset is not None else 0,
        n_items=dataset.n_items if dataset is not None else 0,
        nnz=int(dataset.train.nnz) if dataset is not None else 0,
        batch_users=cfg.train.batch_users,
        d_max=m.d_max,
        n_layers=m.n_layers,
    )
