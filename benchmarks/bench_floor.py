"""The graph backbones' training step against the floor of this machine (Gowalla, protocol P).

LightGCN's step is 3 sparse products Â·E forward and 3 (Âᵀ·G) backward plus O(batch) work, so
its floor is six sparse products; NGCF adds per layer two dense (N × d) · (d × d) products
forward and four backward (bet.md §8.3-8.4). This script times, interleaved round by round so
load changes hit every case alike (medians of ``--repeats`` rounds, one torch thread):

* ``stream``: one pass over an (N × d) float32 table (``y = x * 1``) — the memory bandwidth;
* ``spmm x6``: the six sparse products of a LightGCN step, the sparse-product floor;
* ``gemm x18``: NGCF's eighteen dense (N × d)·(d × d)-sized products per step;
* ``lightgcn step`` and ``ngcf step``: forward + backward + (fused) Adam on a 10,000-user batch;
* ``ngcf step, autograd loss``: the NGCF step with its loss through plain autograd on every
  gathered batch row (``NGCF.loss_reference``, before ``models/ngcf_loss.py``);
* ``ngcf step, autograd layer``: that step with each layer also written as plain autograd ops
  and float dropout draws (the implementation before ``models/ngcf_layer.py``).

The batch is the trainer's: 10,000 users drawn by ``BPRSampler`` (with replacement when the
data has fewer users), one positive and one sampled negative each.

    python benchmarks/bench_floor.py                 # 5 rounds
    python benchmarks/bench_floor.py --repeats 9
    python benchmarks/bench_floor.py --dataset gowalla-mini --repeats 15
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from embudget.data import BPRSampler, load_dataset
from embudget.data.dataset import Dataset
from embudget.models import NGCF, build_model
from embudget.models.base import Backbone
from embudget.models.graph import SparseAdjacency, sparse_dense_mm
from embudget.training.adam import FusedAdam


class ReferenceLossNGCF(NGCF):
    """NGCF whose loss goes through plain autograd on every gathered batch row."""

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        return self.loss_reference(users, pos, neg)


class AutogradNGCF(ReferenceLossNGCF):
    """NGCF whose loss and layers go through autograd op by op, with float dropout draws."""

    def layers(self) -> list[torch.Tensor]:
        e = self.ego()
        gen = self._generator(e.device)
        values = self.node_dropout(self.graph, gen)
        p, out = self.mess_dropout.p, [e]
        for k in range(self.n_layers):
            side = self.graph(e, values)
            bias = self.b_gc[k] + self.b_bi[k]
            h = torch.addmm(torch.addmm(bias, side, self.w_gc[k]), e * side, self.w_bi[k])
            e = torch.nn.functional.leaky_relu(h, 0.2)
            mask = torch.rand(e.shape, generator=gen)
            e = e * mask.ge_(p).mul_(1.0 / (1.0 - p))
            out.append(e)
        return out


VARIANTS = {"ngcf-reference-loss": ReferenceLossNGCF, "ngcf-autograd": AutogradNGCF}


def _step(
    name: str, ds: Dataset, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
) -> Callable[[], None]:
    g = torch.Generator().manual_seed(0)
    if name in VARIANTS:
        model: Backbone = VARIANTS[name](ds.n_users, ds.n_items, ds.train, generator=g)
    else:
        model = build_model(name, ds.n_users, ds.n_items, ds.train, generator=g)
    model.train()
    opt = FusedAdam(list(model.parameters()), lr=1e-3)  # the optimiser embudget trains with

    def run() -> None:
        loss = model.loss(*batch)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return run


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dataset", default="gowalla")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset(args.dataset)
    n, d = ds.n_users + ds.n_items, 128
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=gen)
    w = torch.randn(d, d, generator=gen)
    graph = SparseAdjacency.lightgcn(ds.train)
    a = graph.tensor()
    batch = BPRSampler(ds.train, 10_000, rng=np.random.default_rng(0)).sample()

    def spmm6() -> None:
        for _ in range(6):
            sparse_dense_mm(a, x)

    def gemm18() -> None:
        for _ in range(3):  # per layer: 2 forward, 2 input-gradient, 2 weight-gradient products
            x.mm(w), x.mm(w), x.mm(w.t()), x.mm(w.t()), x.t().mm(x), x.t().mm(x)

    cases: dict[str, Callable[[], object]] = {
        "stream (one pass)": lambda: x.mul(1.0),
        "spmm x6": spmm6,
        "gemm x18": gemm18,
        "lightgcn step": _step("lightgcn", ds, batch),
        "ngcf step": _step("ngcf", ds, batch),
        "ngcf step, autograd loss": _step("ngcf-reference-loss", ds, batch),
        "ngcf step, autograd layer": _step("ngcf-autograd", ds, batch),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for fn in cases.values():
        fn()  # warm-up
    for _ in range(args.repeats):
        for k, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"{args.dataset}: N = {n:,} nodes, nnz(Â) = {graph.nnz:,}, d = {d}; "
        f"torch {torch.__version__}, 1 thread, {args.repeats} rounds"
    )
    gb = n * d * 4 * 2 / 1e9
    print(f"{'case':<26} {'median':>9}  {'min':>8}")
    for k, v in times.items():
        print(f"{k:<26} {med[k] * 1e3:8.1f} ms {min(v) * 1e3:7.1f} ms")
    print(f"bandwidth ~{gb / med['stream (one pass)']:.1f} GB/s (read + write of one table)")
    print(f"lightgcn step / spmm floor: {med['lightgcn step'] / med['spmm x6']:.2f}x")
    floor = med["spmm x6"] + med["gemm x18"]
    print(
        f"ngcf floor (spmm x6 + gemm x18): {floor * 1e3:.0f} ms "
        f"= {floor / med['lightgcn step']:.2f}x the lightgcn step"
    )
    print(
        f"ngcf step / lightgcn step: {med['ngcf step'] / med['lightgcn step']:.2f}x; "
        f"ngcf step / its floor: {med['ngcf step'] / floor:.2f}x"
    )
    loss = med["ngcf step, autograd loss"] / med["ngcf step"]
    layer = med["ngcf step, autograd layer"] / med["ngcf step, autograd loss"]
    print(f"ngcf distinct-row loss vs autograd loss: {loss:.2f}x faster")
    print(f"ngcf fused layer vs autograd layer (both with the autograd loss): {layer:.2f}x faster")


if __name__ == "__main__":
    main()
