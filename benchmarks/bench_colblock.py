"""Does restricting LightGCN's first propagation to the non-zero column blocks pay?

A budgeted table E^(0) is zero past each row's size, so the first layer's Â·E^(0) can be
computed block by block: columns [a, b) need only the rows whose size exceeds a, i.e.
Â[:, R_a] · E^(0)[R_a, a:b]. Layers 2 and 3 gain nothing (Â·E^(0) is non-zero past a row's
size as soon as one neighbour is larger), so this bounds the saving to the first of three
layers. The script times the dense product against the blocked one for the given block
boundaries, with the sizes of a run directory (``sizes.npz``), interleaved, and prints the
medians and the share of non-zeros each block touches.

    python benchmarks/bench_colblock.py RUN_DIR/sizes.npz --bounds 0,32,128 \
        --bounds 0,8,16,24,32,48,64,96,128
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import scipy.sparse as sp
import torch

from embudget.data import load_dataset
from embudget.models.graph import sym_norm_adjacency


def _torch_csr(m: sp.csr_matrix) -> torch.Tensor:
    return torch.sparse_csr_tensor(
        torch.from_numpy(m.indptr.astype(np.int32)),
        torch.from_numpy(m.indices.astype(np.int32)),
        torch.from_numpy(m.data),
        size=m.shape,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sizes", help="sizes.npz of a run (user_sizes, item_sizes)")
    ap.add_argument("--bounds", action="append", required=True, help="e.g. 0,32,128")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset("gowalla", protocol="paper", split_seed=42)
    a = sym_norm_adjacency(ds.train)
    with np.load(args.sizes, allow_pickle=False) as z:
        sizes = np.concatenate([z["user_sizes"], z["item_sizes"]]).astype(np.int64)
    d = 128
    x = torch.randn(a.shape[0], d, generator=torch.Generator().manual_seed(0))
    x *= torch.arange(d)[None, :] < torch.from_numpy(sizes)[:, None]
    dense_a, a_csc = _torch_csr(a), a.tocsc()
    print(f"N {a.shape[0]:,}, nnz {a.nnz:,}, mean size {sizes.mean():.1f}")
    for spec in args.bounds:
        bounds = [int(b) for b in spec.split(",")]
        t0 = time.perf_counter()
        blocks = []
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            rows = np.flatnonzero(sizes > lo)
            blocks.append((lo, hi, torch.from_numpy(rows), _torch_csr(a_csc[:, rows].tocsr())))
        build = time.perf_counter() - t0
        share = [blk[3].values().numel() / a.nnz for blk in blocks]
        work = sum((hi - lo) * s for (lo, hi, _, _), s in zip(blocks, share, strict=True)) / d

        def blocked(blocks: list = blocks) -> torch.Tensor:
            out = torch.zeros(a.shape[0], d)
            for lo, hi, rows, sub in blocks:
                if len(rows):
                    out[:, lo:hi] = sub @ x[rows, lo:hi]
            return out

        assert torch.allclose(blocked(), dense_a @ x, atol=1e-5)
        times: dict[str, list[float]] = {"dense": [], "blocked": []}
        for _ in range(args.repeats):  # interleaved: load drift hits both alike
            for name, fn in (("dense", lambda: dense_a @ x), ("blocked", blocked)):
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
        md, mb = (statistics.median(times[k]) for k in ("dense", "blocked"))
        print(
            f"bounds {spec}: nnz share per block {[round(s, 3) for s in share]}, "
            f"work {work:.2f} of dense; dense {md * 1e3:.1f} ms, blocked {mb * 1e3:.1f} ms "
            f"(ratio {mb / md:.2f}); building the blocks {build * 1e3:.0f} ms"
        )


if __name__ == "__main__":
    main()
