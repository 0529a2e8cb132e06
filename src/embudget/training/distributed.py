"""Data-parallel training over ``torch.distributed`` (``torchrun --nproc_per_node=P``).

Every process (rank) draws the same global BPR batch from the same seeded sampler and trains
on its contiguous 1/P slice (:func:`batch_slice`). A slice's loss is its own mean, so its
gradient is scaled by the slice's share of the batch before the ranks' gradients are summed
(:meth:`Group.sync_grads`): the sum is the gradient of the global batch's mean loss, and every
rank applies the same Adam step to the same parameters. The trajectory is the one-process
trajectory up to the order of floating-point sums (``tests/test_ddp.py``).

Rank 0 evaluates, decides early stopping and writes every file; the other ranks follow the
decisions it broadcasts. Checkpoints hold only the global state (parameters, Adam, the global
sampler), so a run checkpointed at one P resumes at another.

The processes find each other through torchrun's variables (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): gloo for CPU tensors, NCCL for CUDA ones
(rank k on GPU ``LOCAL_RANK``). Without ``WORLD_SIZE``, or with ``WORLD_SIZE=1``, nothing here
calls ``torch.distributed`` and training runs exactly as in one process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch

from embudget.errors import ConfigError

log = logging.getLogger(__name__)

#: How long a rank waits in a collective. Long: during a search only rank 0 works (the probes)
#: while the others wait for its candidates.
TIMEOUT = timedelta(hours=48)


def world_size() -> int:
    """Processes in the job (torchrun's ``WORLD_SIZE``; 1 when unset)."""
    return int(os.environ.get("WORLD_SIZE") or 1)


def local_device(device: torch.device) -> torch.device:
    """The device of this rank: under torchrun with P > 1, a CUDA device without an index
    becomes GPU ``LOCAL_RANK`` (made current, as NCCL needs); anything else is unchanged."""
    if world_size() <= 1 or device.type != "cuda" or device.index is not None:
        return device
    dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK") or 0))
    torch.cuda.set_device(dev)
    return dev


def batch_slice(n: int, rank: int, size: int) -> slice:
    """Rank ``rank``'s contiguous share of ``n`` rows split over ``size`` ranks (the first
    ``n mod size`` ranks get one more row, as ``numpy.array_split``)."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


@dataclass(frozen=True)
class Group:
    """The job's default process group, as this rank sees it."""

    rank: int
    size: int
    #: where collectives' tensors live: CPU for gloo, this rank's GPU for NCCL
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sync_grads(
        self, params: Sequence[torch.Tensor], loss: torch.Tensor | None, share: float
    ) -> torch.Tensor:
        """Sum ``share · grad`` over the ranks into every parameter's ``.grad`` (None where no
        rank had one, as one process on the whole batch leaves it) and return the global loss
        (the ranks' ``share · loss`` summed). One all-reduce of one flat buffer.

        ``share`` is this rank's fraction of the global batch; ``loss`` is None for an empty
        slice (then the rank adds zeros).
        """
        import torch.distributed as dist

        # a parameter without a gradient adds zeros; its flag says whether any rank had one
        parts = [
            p.grad.reshape(-1) if p.grad is not None else p.detach().new_zeros(p.numel())
            for p in params
        ]
        n_grad = sum(t.numel() for t in parts)
        ref = params[0].detach() if params else torch.zeros((), device=self.device)
        flags = ref.new_tensor([float(p.grad is not None) for p in params])
        value = ref.new_zeros(1) if loss is None else loss.detach().reshape(1).to(ref.dtype)
        flat = torch.cat([*parts, value, flags])
        flat[: n_grad + 1].mul_(share)
        dist.all_reduce(flat)
        had = flat[n_grad + 1 :].tolist()
        off = 0
        for p, h in zip(params, had, strict=True):
            n = p.numel()
            p.grad = flat[off : off + n].view_as(p).to(p.dtype) if h else None
            off += n
        return flat[n_grad]

    def broadcast_value(self, value: float) -> float:
        """Rank 0's ``value`` on every rank (the others' argument is ignored)."""
        import torch.distributed as dist

        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.broadcast(t, 0)
        return float(t.item())

    def broadcast_arrays(self, arrays: Sequence[np.ndarray] | None) -> list[np.ndarray]:
        """Rank 0's integer arrays (flattened, as int64) on every rank; the others pass None."""
        import torch.distributed as dist

        count = int(self.broadcast_value(len(arrays) if arrays is not None else 0))
        lengths = torch.zeros(count, dtype=torch.int64, device=self.device)
        if arrays is not None and self.is_main:
            lengths.copy_(torch.tensor([a.size for a in arrays], dtype=torch.int64))
        dist.broadcast(lengths, 0)
        data = torch.zeros(int(lengths.sum()), dtype=torch.int64, device=self.device)
        if arrays is not None and self.is_main and count:
            flat = np.concatenate([np.asarray(a, dtype=np.int64).ravel() for a in arrays])
            data.copy_(torch.from_numpy(flat))
        dist.broadcast(data, 0)
        out = data.cpu().numpy()
        bounds = np.concatenate([[0], np.cumsum(lengths.cpu().numpy())])
        return [out[bounds[i] : bounds[i + 1]].copy() for i in range(count)]

    def all_equal(self, value: int) -> bool:
        """Whether every rank passed the same ``value`` (a collective: all ranks call it)."""
        import torch.distributed as dist

        t = torch.tensor([value, -value], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t[0]) == value and int(t[1]) == -value

    def barrier(self) -> None:
        """Wait until every rank got here (an all-reduce: the same on gloo and NCCL)."""
        import torch.distributed as dist

        dist.all_reduce(torch.zeros(1, device=self.device))


def current(device: torch.device) -> Group | None:
    """The job's process group (joined on first use, for ``device``'s backend), or None when
    this is the only process."""
    n = world_size()
    if n <= 1:
        return None
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT)
    if dist.get_world_size() != n:
        raise ConfigError(
            f"WORLD_SIZE is {n} but the process group has {dist.get_world_size()} ranks"
        )
    on = device if dist.get_backend() == "nccl" else torch.device("cpu")
    return Group(dist.get_rank(), n, on)


def shutdown(*, wait: bool = True) -> None:
    """Leave the process group if this process joined one (at the end of a command).

    ``wait``: first wait for every rank (after a command that succeeded everywhere). After a
    failure the other ranks may never arrive, so the group is left at once.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if wait:
            # destroying is not collective: a rank that tears gloo down while another still
            # holds its connections can make that one abort ("terminate called without an
            # active exception", seen once under load), so every rank arrives first
            try:
                dist.barrier()
            except RuntimeError as e:  # a rank that failed left without waiting
                log.warning("another rank left the process group early: %s", e)
        dist.destroy_process_group()
