"""TorchRec export of a run: export time, file sizes, load time, and the lookups unsharded and
sharded over 2 gloo processes (table-wise and column-wise), each checked against
``embudget.load``'s tables.

    python benchmarks/bench_torchrec.py RUN_DIR OUT_DIR

RUN_DIR is a finished run (``embudget search``/``train``); OUT_DIR receives the package and the
reference export.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from embudget.deploy.export import export_run, load
from embudget.deploy.torchrec import load_torchrec
from embudget.deploy.torchrec_shard import run_sharded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("run_dir")
    ap.add_argument("out_dir")
    args = ap.parse_args()
    out = Path(args.out_dir)
    pkg = out / "torchrec"
    t = time.perf_counter()
    meta = export_run(args.run_dir, pkg, fmt="torchrec", overwrite=True)
    seconds = time.perf_counter() - t
    n = sum(len(v) for side in meta["tables"].values() for v in side.values())
    print(f"export {seconds:.3f} s, {n} tables, {meta['padding']['zero_values']:,} zero values")
    for f in sorted(pkg.iterdir()):
        print(f"  {f.name:20s} {f.stat().st_size:>10,} B")
    export_run(args.run_dir, out / "ref.safetensors", overwrite=True)
    print(f"  (jagged safetensors export {(out / 'ref.safetensors').stat().st_size:,} B)")
    model = load(out / "ref.safetensors").model
    ref = {
        "user": model.user_tables()[0].full().detach().numpy(),
        "item": model.item_tables()[0].full().detach().numpy(),
    }
    t = time.perf_counter()
    ebc, maps = load_torchrec(pkg)
    print(f"load_torchrec {time.perf_counter() - t:.3f} s (first TorchRec import included)")
    ids = {side: np.arange(ref[side].shape[0]) for side in ref}
    for side in ref:
        t = time.perf_counter()
        got = maps.lookup(ebc, side, ids[side])
        exact = all(np.array_equal(v.numpy(), ref[side]) for v in got.values())
        print(f"lookup all {side}s unsharded {time.perf_counter() - t:.4f} s, exact {exact}")
    t = time.perf_counter()
    sharded = run_sharded(pkg, ids, world=2)
    print(f"run_sharded (2 gloo processes, both plans) {time.perf_counter() - t:.1f} s")
    for kind, res in sharded.items():
        exact = all(np.array_equal(v, ref[s]) for s in res for v in res[s].values())
        print(f"  {kind}: exact {exact}")


if __name__ == "__main__":
    main()
