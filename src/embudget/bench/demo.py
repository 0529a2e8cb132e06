"""The README's main job: the full-size model, SU and BET at one budget, side by side.

The demo runs the command line's default procedure for the backbone (fast mode for MF and
LightGCN, ``config.FAST_BY_DEFAULT``; ``fast=False`` for the faithful one), scaled down so
that the three runs finish in a few minutes on two CPU cores with MF on the shipped Gowalla
data; the reductions are the presets ``config/presets/demo.yaml`` (and ``demo-faithful.yaml``
in faithful mode), recorded in each run's ``config.yaml``. The default setting, MF at 95 %
sparsity, is one where BET's gain over SU is as large in the full runs as in the demo
(RESULTS.md, "The demo").

The full-size run comes first (in fast mode it is the nested Θ0 that SU and BET start from);
SU and BET then run side by side in two processes where there are two cores. Each run is
deterministic given its config, so the results do not depend on that.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from embudget.config import RunConfig, is_fast, load_config, preset_path
from embudget.result import RunResult

#: The presets with the demo's reductions: training (always), the faithful search (faithful
#: mode only; fast mode's probes cost seconds and need none).
DEMO_PRESETS = ("demo",)
DEMO_FAITHFUL_PRESETS = ("demo-faithful",)

METHODS = ("full", "su", "bet")

#: The demo's budget: MF at 95 % sparsity on Gowalla (RESULTS.md, "The demo").
DEFAULT_SPARSITY = 0.95


def run_demo(
    out: str | Path,
    *,
    dataset: str = "gowalla",
    model: str = "mf",
    sparsity: float = DEFAULT_SPARSITY,
    overrides: Sequence[str] = (),
    fast: bool | None = None,
    progress: bool = True,
    jobs: int | None = None,
) -> list[RunResult]:
    """Run full, SU and BET into ``out/<method>`` (finished runs are reused) and return their
    results. A shared pretrained model is cached in ``out/cache``. ``fast``: as in
    :func:`embudget.config.load_config` (None: the backbone's default mode). ``jobs``: processes
    for SU and BET after the full run (None: 2 where there are at least two CPUs, else 1)."""
    out = Path(out)
    settings = [
        f"data.name={dataset}",
        f"model.name={model}",
        f"budget.sparsity={sparsity}",
        f"cache_dir={out / 'cache'}",
    ]
    names = DEMO_PRESETS if is_fast(fast, model) else DEMO_PRESETS + DEMO_FAITHFUL_PRESETS
    files = [preset_path(n) for n in names]
    cfgs = [
        load_config(files, [*settings, *overrides, f"search.method={m}"], fast=fast)
        for m in METHODS
    ]
    jobs = (2 if (os.cpu_count() or 1) >= 2 else 1) if jobs is None else jobs
    first = _run(cfgs[0], out / METHODS[0], progress)
    if jobs < 2:
        rest = [_run(cfg, out / m, progress) for cfg, m in zip(cfgs[1:], METHODS[1:], strict=True)]
    else:  # spawn: a fresh interpreter per process, nothing inherited from the caller's threads
        with ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn")) as pool:
            futures = [
                pool.submit(_run, cfg, out / m, False)
                for cfg, m in zip(cfgs[1:], METHODS[1:], strict=True)
            ]
            rest = [f.result() for f in futures]
    return [first, *rest]


def _run(cfg: RunConfig, run: Path, progress: bool) -> RunResult:
    """One demo run; a run folder that holds a config is resumed (or reused when finished)."""
    from embudget.pipeline.run import run_search

    return run_search(cfg, run, resume=(run / "config.yaml").is_file(), progress=progress)


def paired_p(out: str | Path, method: str, baseline: str, metric: str) -> float:
    """Two-sided paired t-test p of ``out/<method>`` against ``out/<baseline>`` on a per-user
    test metric (protocol.md §8), over the users both runs evaluated."""
    from embudget.bench.stats import align_per_user, paired_ttest
    from embudget.io import load_npz

    a, b = (load_npz(Path(out) / m / "per_user_test.npz") for m in (method, baseline))
    _, va, vb = align_per_user(a["users"], a[metric], b["users"], b[metric])
    return paired_ttest(va, vb)["p"]


def format_table(rows: Sequence[RunResult], out: str | Path | None = None) -> str:
    """A small Markdown table: test Recall@20, NDCG@20, parameters used / budget, time, and
    (given the demo's ``out``) the paired p-value of each budgeted method against SU."""
    with_p = out is not None and any(r.method == "su" for r in rows)
    head = "| method | test Recall@20 | test NDCG@20 | params used / budget | seconds |"
    lines = [
        head + (" p vs SU (R@20 / N@20) |" if with_p else ""),
        "|---|---:|---:|---:|---:|" + ("---:|" if with_p else ""),
    ]
    for r in rows:
        u, t = r.usage, r.timing
        budget = f"{u.params_budget:,}" if r.budgeted else "unbudgeted"
        seconds = t.pretrain + t.search + t.retrain
        line = (
            f"| {r.method} | {r.test.get('recall@20'):.4f} | {r.test.get('ndcg@20'):.4f} "
            f"| {u.params:,} / {budget} | {seconds:.0f} |"
        )
        if with_p:
            assert out is not None
            p = ""
            if r.budgeted and r.method not in (None, "su"):
                ps = (paired_p(out, str(r.method), "su", m) for m in ("recall@20", "ndcg@20"))
                p = " / ".join(f"{v:.2g}" for v in ps)
            line += f" {p} |"
        lines.append(line)
    if rows:
        r = rows[0]
        lines.append("")
        lines.append(
            f"{r.dataset} ({r.protocol} protocol), {r.backbone}, seed {r.seed}, "
            f"sparsity {rows[-1].sparsity}; test metrics of the model chosen on validation"
            + ("; p: two-sided paired t-test over test users." if with_p else ".")
        )
    return "\n".join(lines)
