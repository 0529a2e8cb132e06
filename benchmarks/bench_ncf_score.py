"""NCF full-ranking cost against the size of the (users, items, d_max) chunk it scores in.

NeuMF's MLP branch cannot be reduced to one matrix product, so scoring every Gowalla item for
a user batch forms ReLU(a_u + c_v) chunk by chunk (``NCF.scorer``). The chunk's memory bound
decides whether it stays in cache. Times ``--users`` users against all 40,981 items at each
``--chunk-mib``, interleaved, on a randomly initialised model (the cost does not depend on the
weights), and checks that every chunk size gives the same scores.

    python benchmarks/bench_ncf_score.py --chunk-mib 256,32,4,1 --users 500 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from embudget.models.ncf import NCF

GOWALLA = (29_858, 40_981)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunk-mib", default="256,32,4,1")
    ap.add_argument("--users", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = NCF(*GOWALLA, 128, generator=torch.Generator().manual_seed(0))
    users = torch.arange(args.users)
    sizes = [float(x) for x in args.chunk_mib.split(",")]
    times: dict[float, list[float]] = {s: [] for s in sizes}
    ref: torch.Tensor | None = None
    for _ in range(args.repeats):  # interleaved: load drift hits every size alike
        for mib in sizes:
            model.score_chunk_bytes = int(mib * 2**20)
            t0 = time.perf_counter()
            out = model.scorer()(users)
            times[mib].append(time.perf_counter() - t0)
            if ref is None:
                ref = out
            assert torch.equal(out, ref), "chunking changed the scores"
    base = statistics.median(times[sizes[0]])
    full = GOWALLA[0] / args.users
    for mib in sizes:
        m = statistics.median(times[mib])
        print(
            f"chunk {mib:g} MiB: {m:.2f} s per {args.users} users "
            f"(~{m * full:.0f} s for all Gowalla users), {base / m:.1f}x vs {sizes[0]:g} MiB"
        )


if __name__ == "__main__":
    main()
