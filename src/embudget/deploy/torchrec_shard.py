"""Sharding a TorchRec package (:mod:`embudget.deploy.torchrec`) with
``DistributedModelParallel`` under ``torch.distributed`` (gloo on CPU).

Plans (:func:`sharding_plan`): ``table_wise`` puts table ``i`` on rank ``i % world``;
``column_wise`` splits every table whose dim divides into ``world`` slices of a multiple of 4
columns (FBGEMM's per-shard rule) across all ranks, and places the others table-wise. Row-wise
sharding is refused by TorchRec on CPU (measured with torchrec 1.9.2, fbgemm-gpu-cpu 1.8.0), so
it is not offered.

:func:`shard_and_lookup` runs inside an initialised process group (every rank calls it with
the same ids) and returns the same rows as an unsharded lookup; :func:`run_sharded` starts
``world`` gloo processes on this machine, runs it for each plan asked and returns rank 0's
results (one start, as importing TorchRec takes seconds per process).
"""

from __future__ import annotations

import contextlib
import queue
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embudget.deploy.formats import SIDES
from embudget.deploy.torchrec_package import DIM_STEP, TorchRecMaps, read_package
from embudget.errors import ExportError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["PLANS", "run_sharded", "shard", "shard_and_lookup", "sharding_plan"]

PLANS = ("table_wise", "column_wise")


def sharding_plan(configs: list[dict[str, Any]], kind: str, world: int) -> dict[str, str]:
    """TorchRec table name -> ``table_wise`` or ``column_wise`` for plan ``kind``."""
    if kind not in PLANS:
        raise ExportError(f"unknown sharding plan {kind!r}; use one of {', '.join(PLANS)}")
    out = {}
    for c in configs:
        cw = kind == "column_wise" and c["embedding_dim"] % (DIM_STEP * world) == 0
        out[c["name"]] = "column_wise" if cw else "table_wise"
    return out


def shard(path: str | Path, kind: str = "table_wise") -> tuple[nn.Module, TorchRecMaps]:
    """The package's collection wrapped in ``DistributedModelParallel`` (CPU) with plan
    ``kind``, each rank's shards filled from the package. Needs an initialised process group."""
    import torch
    import torch.distributed as dist
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.sharding_plan import (
        column_wise,
        construct_module_sharding_plan,
        table_wise,
    )
    from torchrec.distributed.types import ShardingPlan

    from embudget.deploy.torchrec import ebc_from_configs

    state, maps = read_package(path)
    world = dist.get_world_size()
    ebc = ebc_from_configs(maps.configs, device="meta")  # DMP allocates only the local shards
    kinds = sharding_plan(maps.configs, kind, world)
    per_table = {
        name: column_wise(ranks=list(range(world)))
        if k == "column_wise"
        else table_wise(rank=i % world)
        for i, (name, k) in enumerate(kinds.items())
    }
    module_plan = construct_module_sharding_plan(
        ebc, per_table, local_size=world, world_size=world, device_type="cpu"
    )
    dmp = DistributedModelParallel(
        ebc, device=torch.device("cpu"), plan=ShardingPlan({"": module_plan})
    )
    with torch.no_grad():
        for key, sharded in dmp.state_dict().items():
            full = state[key.removeprefix("_dmp_wrapped_module.").removeprefix("module.")]
            for s in sharded.local_shards():
                (r, c), (nr, nc) = s.metadata.shard_offsets, s.metadata.shard_sizes
                s.tensor.copy_(torch.from_numpy(full[r : r + nr, c : c + nc]))
    return dmp.eval(), maps


def shard_and_lookup(
    path: str | Path, ids: dict[str, Any], kind: str = "table_wise"
) -> dict[str, dict[str, np.ndarray]]:
    """Shard the package (:func:`shard`) and look up ``ids`` (side -> entity indices) through
    it. Every rank passes the same ids; each looks up an equal slice (its local batch), and the
    slices are gathered, so every rank returns ``{side: {embudget table: (n, d_max) rows}}``,
    the rows :meth:`TorchRecMaps.lookup` gives without sharding."""
    import torch
    import torch.distributed as dist

    dmp, maps = shard(path, kind)
    world, rank = dist.get_world_size(), dist.get_rank()
    out: dict[str, dict[str, np.ndarray]] = {}
    for side in SIDES:
        if side not in ids:
            continue
        idx = np.asarray(ids[side], dtype=np.int64).reshape(-1)
        if idx.size == 0:
            out[side] = {t: np.zeros((0, maps.d_max), np.float32) for t in maps.tables(side)}
            continue
        per = -(-idx.size // world)
        padded = np.concatenate([idx, np.full(per * world - idx.size, idx[-1])])
        local = maps.lookup(dmp, side, padded[rank * per : (rank + 1) * per])
        out[side] = {}
        for table, rows in local.items():
            parts = [torch.empty_like(rows) for _ in range(world)]
            dist.all_gather(parts, rows.contiguous())
            out[side][table] = torch.cat(parts)[: idx.size].numpy()
    return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(
    rank: int,
    world: int,
    port: int,
    path: str,
    ids: dict[str, Any],
    kinds: tuple[str, ...],
    results: Any,
) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        got = {kind: shard_and_lookup(path, ids, kind) for kind in kinds}
        if rank == 0:
            results.put(got)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_sharded(
    path: str | Path,
    ids: dict[str, Any],
    *,
    world: int = 2,
    kinds: tuple[str, ...] = PLANS,
) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """:func:`shard_and_lookup` for each plan of ``kinds`` in ``world`` gloo processes on this
    machine (spawned, on a free local port): ``{plan: rank 0's result}``. A failing process
    raises here (``ProcessRaisedException``)."""
    for kind in kinds:
        sharding_plan([], kind, world)  # an unknown plan fails here, not in the processes
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    args = (world, _free_port(), str(path), ids, tuple(kinds), results)
    procs = mp.start_processes(_worker, args=args, nprocs=world, join=False, start_method="spawn")
    got: dict[str, dict[str, dict[str, np.ndarray]]] | None = None
    while got is None:
        with contextlib.suppress(queue.Empty):
            got = results.get(timeout=0.5)
        if got is None and procs.join(timeout=0):  # raises if a process failed
            break
    while not procs.join():
        pass
    if got is None:
        raise ExportError("the sharded lookup ended without a result")
    return got
