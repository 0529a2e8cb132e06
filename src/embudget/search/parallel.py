"""Probes on Ray workers, and several probes per iteration (bet.md §5–§6, scaled out).

Two optional additions to the search loop of :mod:`embudget.search.loop`:

- :func:`ray_workers` (:mod:`embudget.search.workers`): a context in which a search runs its
  probes on Ray actors (a local Ray with N CPUs, or a cluster at an address). Θ0 is put into
  the object store once per search; every actor holds a copy of the searcher without its
  predictor and probes the actions it is sent, with the driver's torch thread count.
- ``search.probes_per_iteration`` = q (default 1, the paper's loop). With q > 1, a stated
  variant, every iteration probes q distinct candidates of its sample: the q best by the
  predictor (greedy), the q nearest to the best action (nearest) or q random ones (random),
  each with its own probe seed (the probe's index). All q results join the predictor's replay
  and the predictor takes N·q updates (N per probe, as in the paper's loop). T iterations
  probe T·q actions; every action comes from the bounded sampler, so each meets the budget.
  The history has one line per probe: ``t`` numbers the probes, ``iteration`` the iterations.
  Without workers the q probes run one after another, with the same results.

With q = 1 the iterations form a chain: iteration t selects with the predictor updated by
iteration t − 1, so only one probe can run at a time, except in the iterations that select at
random (t mod 5 = 3 for ``bet`` and ``bet-simple``, every iteration of ``bet-random``). Their
actions depend only on their own random streams, so idle workers probe them ahead. Results
equal the serial loop's bit for bit (same machine type and thread count): every probe is seeded
by its index and the predictor sees the results in iteration order. The best speed-up over the
serial loop is therefore 5/4 for ``bet`` and ``bet-simple`` and min(T, workers) for
``bet-random``, less Ray's start-up (seconds) and each probe's transfer.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from embudget.budget.usage import params_used
from embudget.errors import ConfigError, DamagedFileError
from embudget.io import RunDir, append_jsonl, save_torch
from embudget.search.actions import Action
from embudget.search.loop import (
    HISTORY_FILE,
    STATE_FILE,
    STRATEGIES,
    ActionSearcher,
    SearchOutcome,
    _jsonable,
    _load_state,
    _restore_history,
    best_probe,
)
from embudget.search.sampler import SampleBatch
from embudget.search.workers import (
    INSTALL_HINT,
    LocalProbes,
    RayPool,
    RayProbes,
    RayUnavailableError,
    active_pool,
    import_ray,
    ray_workers,
)
from embudget.seeds import np_rng

__all__ = [
    "INSTALL_HINT",
    "RayPool",
    "RayUnavailableError",
    "active_pool",
    "import_ray",
    "ray_workers",
    "search_parallel",
    "select_many",
]

log = logging.getLogger(__name__)


def _distinct(order: np.ndarray, batch: SampleBatch, q: int) -> list[int]:
    """The first ``q`` candidates of ``order`` whose actions differ (repeats if too few)."""
    picked: list[int] = []
    seen: set[bytes] = set()
    for i in order.tolist():
        key = batch.hist_u[i].tobytes() + batch.hist_v[i].tobytes()
        if key not in seen:
            seen.add(key)
            picked.append(i)
        if len(picked) == q:
            return picked
    rest = [i for i in order.tolist() if i not in picked]
    return picked + rest[: q - len(picked)]


def _strategy(searcher: ActionSearcher, it: int) -> str:
    return "random" if searcher.random_select else STRATEGIES[it % 5]


def select_many(
    searcher: ActionSearcher, it: int, batch: SampleBatch, best: Action | None, q: int
) -> tuple[list[int], str]:
    """The candidates probed in iteration ``it``: the serial loop's one when q = 1, else q
    distinct ones by the same strategy (see the module docstring)."""
    if q == 1:
        idx, strategy = searcher.select(it, batch.hist_u, batch.hist_v, best)
        return [idx], strategy
    strategy = _strategy(searcher, it)
    if strategy == "nearest" and best is None:
        strategy = "greedy"
    m = batch.hist_u.shape[0]
    if strategy == "random":
        rng = np_rng(searcher.cfg.seed, "select", it)
        return _distinct(rng.permutation(m), batch, q), strategy
    pred = searcher.predictor
    assert pred is not None
    hu, hv = pred.check_hists(batch.hist_u, batch.hist_v)
    with torch.no_grad():
        if strategy == "greedy":
            scores = pred(hu, hv).to(torch.float64).cpu().numpy()
            return _distinct(np.argsort(-scores, kind="stable"), batch, q), strategy
        assert best is not None
        bu, bv = pred.check_hists(best.hist_u[None], best.hist_v[None])
        h = pred.embed(torch.cat([hu, bu]), torch.cat([hv, bv])).to(torch.float64)
    dist = torch.linalg.vector_norm(h[:-1] - h[-1], dim=1).cpu().numpy()
    return _distinct(np.argsort(dist, kind="stable"), batch, q), strategy


@dataclass
class _Plan:
    batch: SampleBatch
    idxs: list[int]
    strategy: str
    sample_s: float
    select_s: float


def search_parallel(
    searcher: ActionSearcher, run: RunDir, resume: bool, progress: bool
) -> SearchOutcome:
    """:func:`embudget.search.loop.search` with q probes per iteration, on the workers of the
    enclosing :func:`ray_workers` if any (see the module docstring)."""
    cfg = searcher.cfg
    s = cfg.search
    q = s.probes_per_iteration
    if not 1 <= q <= s.sampler.candidates:
        raise ConfigError(
            f"search.probes_per_iteration must lie in [1, search.sampler.candidates = "
            f"{s.sampler.candidates}], got {q}"
        )
    state_path, history_path = run.file(STATE_FILE), run.file(HISTORY_FILE)
    population: list[dict[str, Any]] = []
    done, seconds = 0, 0.0
    state = _load_state(state_path, cfg, run) if resume and state_path.is_file() else None
    if state is not None:
        done, seconds = int(state["t"]), float(state["seconds"])
        if done % q:
            raise DamagedFileError(
                state_path,
                f"{done} probes are not whole iterations of {q}",
                "start the run again with --overwrite",
            )
        searcher.load_state_dict(state["searcher"])
        population = json.loads(state["population"])
        log.info("resuming search at iteration %d", done // q)
    history = _restore_history(history_path, state)
    pool = active_pool()
    probes: LocalProbes | RayProbes = (
        RayProbes(searcher, pool) if pool is not None else LocalProbes(searcher)
    )
    plans: dict[int, _Plan] = {}
    ahead: set[int] = set()  # iterations whose probes were submitted before their turn

    def plan(it: int, best: Action | None) -> _Plan:
        t0 = time.perf_counter()
        batch = searcher.sampler.sample_batch(s.sampler.candidates, np_rng(cfg.seed, "sampler", it))
        t1 = time.perf_counter()
        idxs, strategy = select_many(searcher, it, batch, best, q)
        return _Plan(batch, idxs, strategy, t1 - t0, time.perf_counter() - t1)

    def submit(it: int, p: _Plan) -> None:
        for j, i in enumerate(p.idxs):
            probes.submit(
                it * q + j, Action(p.batch.hist_u[i], p.batch.hist_v[i], p.batch.records[i])
            )

    def look_ahead(it: int) -> None:
        """Probe later random-selection iterations on workers the chain leaves idle."""
        for nxt in range(it + 1, s.iterations):
            # keep q workers free for the next iteration of the chain
            if probes.busy_from((it + 1) * q) + 2 * q > probes.workers:
                return
            if nxt in ahead or _strategy(searcher, nxt) != "random":
                continue
            plans[nxt] = plan(nxt, None)  # a random selection needs no best action
            submit(nxt, plans[nxt])
            ahead.add(nxt)
            log.debug("iteration %d (random) probed ahead, during iteration %d", nxt, it)

    bar = tqdm(total=s.iterations, initial=done // q, desc="search", disable=not progress)
    try:
        for it in range(done // q, s.iterations):
            t0 = time.perf_counter()
            best = best_probe(population)
            best_action = Action.from_dict(best["action"]) if best is not None else None
            p = plans.pop(it, None) or plan(it, best_action)
            if it not in ahead:
                submit(it, p)
            ahead.discard(it)
            look_ahead(it)
            actions = [
                Action(p.batch.hist_u[i], p.batch.hist_v[i], p.batch.records[i]) for i in p.idxs
            ]
            predicted: list[float | None] = [None] * q
            if searcher.predictor is not None:
                with torch.no_grad():
                    predicted = [
                        float(searcher.predictor(a.hist_u[None], a.hist_v[None])[0])
                        for a in actions
                    ]
            t2 = time.perf_counter()
            results = [probes.result(it * q + j) for j in range(q)]
            t3 = time.perf_counter()
            logs: list[dict[str, float]] = []
            if searcher.trainer is not None:
                for a, res in zip(actions, results, strict=True):
                    searcher.trainer.add(a, res[0])
                logs = searcher.trainer.update(
                    np_rng(cfg.seed, "predictor", it), s.predictor.updates * q
                )
            t4 = time.perf_counter()
            seconds += t4 - t0
            for j, (a, (r, qual, train_s, eval_s)) in enumerate(zip(actions, results, strict=True)):
                t = it * q + j
                population.append({"t": t, "fitness": r, "quality": qual, "action": a.to_dict()})
                best_now = best_probe(population)
                assert best_now is not None
                us, vs = searcher.assignment.sizes(a)
                rec: dict[str, Any] = {
                    "t": t,
                    "strategy": p.strategy,
                    "candidate": p.idxs[j],
                    "n_clamped": p.batch.n_clamped,
                    "predicted": predicted[j],
                    "fitness": r,
                    "quality": qual,
                    "q0": searcher.q0,
                    "best_fitness": best_now["fitness"],
                    "predictor_loss": [lg["loss"] for lg in logs] if j == q - 1 else [],
                    "params_used": params_used(us, vs),  # of one table per entity
                    "user_size_mean": float(us.mean()),
                    "item_size_mean": float(vs.mean()),
                    "record": a.record,
                    "hist_u": a.hist_u.tolist(),
                    "hist_v": a.hist_v.tolist(),
                    "seconds": {
                        "sample": p.sample_s,
                        "select": p.select_s,
                        "probe_train": train_s,
                        "probe_eval": eval_s,
                        "predictor": t4 - t3,
                        "wall": t4 - t0,
                    },
                }
                if q > 1:
                    rec["iteration"] = it
                history.append(json.loads(json.dumps(rec, default=_jsonable)))
                append_jsonl(history_path, history[-1])
            save_torch(
                state_path,
                {
                    "t": (it + 1) * q,
                    "seconds": seconds,
                    "population": json.dumps(population, default=_jsonable),
                    "history": json.dumps(history),
                    "searcher": searcher.state_dict(),
                    "config_hash": cfg.hash(),
                },
            )
            best_now = best_probe(population)
            assert best_now is not None
            bar.update(1)
            bar.set_postfix(best=f"{best_now['fitness']:.4f}")
            log.info(
                "iteration %d (%s): fitness %s, best %.4f, %.1fs (probes %.1fs)",
                it,
                p.strategy,
                ", ".join(f"{res[0]:.4f}" for res in results),
                best_now["fitness"],
                t4 - t0,
                t3 - t2,
            )
    finally:
        bar.close()
        probes.close()
    return SearchOutcome(population, seconds)
