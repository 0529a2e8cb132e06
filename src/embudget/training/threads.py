"""How many intra-op threads a run uses when the config leaves ``threads`` unset.

Torch defaults to one thread per core. For the steps of small runs that is much slower, not
faster: a step is a few dozen element-wise passes over ~1-5 MB tensors, and with two threads
every pass pays a fork/join that costs more than the half pass it saves; on a 2-core machine
with another process running, OpenMP's spinning threads make it 6-10x slower
(BENCHMARKS.md, "Small runs": Last.fm MF 59 ms per step on 1 thread, 354 ms on 2).

:func:`auto_threads` picks one thread below :data:`MIN_WORK_PER_EXTRA_THREAD` floats touched
per step (:func:`step_work`) and adds a thread per multiple of it above, up to the torch
default. The thread count changes the last bits of multi-threaded reductions, so a run's
results depend on it: set ``threads`` explicitly to compare runs across machines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from embudget.config import RunConfig
    from embudget.data.dataset import Dataset

#: Work per step (floats touched, :func:`step_work`) that one more thread needs to pay off.
#: Measured crossover on the 2-core machine: see BENCHMARKS.md, "Small runs".
MIN_WORK_PER_EXTRA_THREAD = 5e8

_GRAPH_MODELS = ("lightgcn", "ngcf")


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
    if model in _GRAPH_MODELS:
        work += 2.0 * n_layers * (2.0 * nnz + rows) * d_max
    if model == "ncf":
        work *= 2.0
    return work


def auto_threads(work: float, available: int | None = None) -> int:
    """Threads for a step of ``work`` floats: 1 below the crossover, then one more per
    :data:`MIN_WORK_PER_EXTRA_THREAD`, at most ``available`` (default: torch's default)."""
    cap = max(1, available if available is not None else default_threads())
    return max(1, min(cap, int(work // MIN_WORK_PER_EXTRA_THREAD)))


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
