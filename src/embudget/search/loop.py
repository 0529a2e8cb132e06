"""The T search iterations (bet.md §5–§6): sample m actions, select one by the t mod 5
schedule, probe it by fine-tuning a fresh copy of Θ0, update the predictor.

Every iteration's randomness comes from named streams keyed by (seed, purpose, t), and the
search state is saved atomically after each iteration (``search_state.pt``, with one line per
iteration in ``history.jsonl``), so a resumed search equals an uninterrupted one. The state
keeps a copy of the history's lines: a resume rewrites ``history.jsonl`` from it, whatever
happened to the file.
"""

from __future__ import annotations

import json
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from embudget.budget.usage import params_used
from embudget.config import RunConfig
from embudget.data.dataset import Dataset
from embudget.errors import DamagedFileError, RunDirError
from embudget.io import RunDir, append_jsonl, load_torch, read_jsonl, save_torch, write_text
from embudget.models.base import Backbone
from embudget.search.actions import Action, RankAssignment
from embudget.search.predictor import FitnessPredictor, PredictorTrainer, greedy, nearest
from embudget.search.probe import probe_plan
from embudget.search.sampler import BoundedSampler
from embudget.seeds import int_seed, np_rng
from embudget.training.fit import Schedule, finetune, validate

log = logging.getLogger(__name__)

STRATEGIES = {0: "greedy", 1: "greedy", 2: "greedy", 3: "random", 4: "nearest"}
STATE_FILE = "search_state.pt"
HISTORY_FILE = "history.jsonl"


def make_sampler(cfg: RunConfig, dataset: Dataset, action_budget: int) -> BoundedSampler:
    """The bounded sampler of the config's search settings at ``action_budget``."""
    s = cfg.search
    return BoundedSampler(
        dataset.n_users,
        dataset.n_items,
        action_budget,
        d_max=cfg.model.d_max,
        max_attempts=s.sampler.max_attempts,
        on_exhausted=s.sampler.on_exhausted,
        size_step=s.sampler.size_step,
    )


class ActionSearcher(ABC):
    """What :func:`search` drives: the sampler, the rank assignment, Q0, the predictor and its
    trainer, the selection rule (bet.md §5) and a probe that measures one action's fitness.

    :class:`Searcher` probes a built-in backbone on its dataset; a user's model is probed by
    :class:`embudget.search.custom.ModelSearcher` with the user's loss and evaluation.

    Args:
        cfg: the search settings (iterations, candidates, predictor updates, seed); its hash
            keys the saved search state.
        sampler: draws the candidate actions.
        assignment: turns an action into sizes (bet.md §3.3).
        q0: Θ0's quality, the denominator of every fitness.
        predictor: the fitness predictor (None: every selection is random).
        random_select: select at random in every iteration (BET-random).
    """

    def __init__(
        self,
        cfg: RunConfig,
        sampler: BoundedSampler,
        assignment: RankAssignment,
        q0: float,
        predictor: FitnessPredictor | None,
        random_select: bool = False,
    ) -> None:
        self.cfg = cfg
        self.sampler = sampler
        self.assignment = assignment
        self.q0 = q0
        self.random_select = random_select
        self.predictor = predictor
        self.trainer: PredictorTrainer | None = None
        if predictor is not None:
            batch = cfg.search.predictor.update_mode == "batch"
            self.trainer = PredictorTrainer(predictor, batch=batch)

    @abstractmethod
    def probe(self, action: Action, t: int) -> tuple[float, float, float, float]:
        """Fine-tune a fresh copy of Θ0 with the action's sizes; (r, Q, train s, eval s)."""

    def select(
        self, t: int, hu: np.ndarray, hv: np.ndarray, best: Action | None
    ) -> tuple[int, str]:
        """The index of the candidate to probe at iteration ``t``, and the strategy used."""
        strategy = "random" if self.random_select else STRATEGIES[t % 5]
        if strategy == "nearest" and best is None:
            strategy = "greedy"
        if strategy == "random":
            return int(np_rng(self.cfg.seed, "select", t).integers(hu.shape[0])), strategy
        assert self.predictor is not None
        if strategy == "greedy":
            return greedy(self.predictor, hu, hv), strategy
        assert best is not None
        return nearest(self.predictor, hu, hv, best.hist_u[None], best.hist_v[None]), strategy

    def state_dict(self) -> dict[str, Any]:
        return {"trainer": self.trainer.state_dict() if self.trainer is not None else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.trainer is not None:
            self.trainer.load_state_dict(state["trainer"])


class Searcher(ActionSearcher):
    """Probes actions against Θ0 and selects the next one (bet.md §5–§6).

    Args:
        model: a backbone of Θ0's shape; each probe loads Θ0 into it.
        theta0: Θ0's weights.
        predictor: the fitness predictor (None: every selection is random).
        random_select: select at random in every iteration (BET-random).
    """

    def __init__(
        self,
        cfg: RunConfig,
        dataset: Dataset,
        model: Backbone,
        theta0: dict[str, torch.Tensor],
        assignment: RankAssignment,
        action_budget: int,
        predictor: FitnessPredictor | None,
        random_select: bool = False,
    ) -> None:
        self.dataset = dataset
        s = cfg.search
        self.theta0 = theta0
        self.model = model
        plan = probe_plan(cfg, dataset)
        self.probe_steps = plan.steps
        self.fitness_users = plan.users
        self.probe_schedule = Schedule(
            s.probe.lr, s.probe.lr_decay, s.probe.lr_decay_every, s.probe.lr_min
        )
        self.model.load_state_dict(theta0)
        sampler = make_sampler(cfg, dataset, action_budget)
        super().__init__(cfg, sampler, assignment, self._quality(), predictor, random_select)

    def _quality(self) -> float:
        res = validate(self.model, self.dataset, "valid", (5, 10, 20), users=self.fitness_users)
        return float(res.means["quality"])

    def probe(self, action: Action, t: int) -> tuple[float, float, float, float]:
        """Fine-tune a fresh copy of Θ0 with the action's sizes; (r, Q, train s, eval s)."""
        t0 = time.perf_counter()
        self.model.load_state_dict(self.theta0)
        us, vs = self.assignment.sizes(action)
        self.model.set_sizes(us, vs)
        if self.probe_steps > 0:
            finetune(
                self.model,
                self.dataset,
                steps=self.probe_steps,
                schedule=self.probe_schedule,
                batch_users=self.cfg.train.batch_users,
                seed=int_seed(self.cfg.seed, "probe", t),
            )
        t1 = time.perf_counter()
        q = self._quality()
        return q / self.q0, q, t1 - t0, time.perf_counter() - t1


def best_probe(population: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Highest measured fitness; ties go to the earlier iteration."""
    if not population:
        return None
    return max(population, key=lambda p: (p["fitness"], -p["t"]))


def ranked(population: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Probes by fitness, highest first; ties go to the earlier iteration."""
    return sorted(population, key=lambda p: (-p["fitness"], p["t"]))


@dataclass(frozen=True)
class SearchOutcome:
    """Every probe (``t``, ``fitness``, ``quality``, ``action`` as a dict) and the seconds the
    iterations took, over all resumptions."""

    population: list[dict[str, Any]]
    seconds: float


_STATE_FIX = (
    "delete it to restart the search from its first iteration (with --resume), or start the "
    "run again with --overwrite"
)


def _load_state(path: Path, cfg: RunConfig, run: RunDir) -> dict[str, Any]:
    """The saved search state, checked field by field.

    Raises:
        DamagedFileError: the file is unreadable or lacks a field.
        RunDirError: the state belongs to another config.
    """
    state = load_torch(path, fix=_STATE_FIX)
    try:
        if not isinstance(state, dict):
            raise TypeError("not a mapping")
        if state["config_hash"] != cfg.hash():
            raise RunDirError(f"cannot resume {run.path}: the search state has another config")
        t = int(state["t"])
        population = json.loads(state["population"])
        history = json.loads(state.get("history", "null"))
        float(state["seconds"])
        if not isinstance(state["searcher"], dict) or len(population) != t or t < 0:
            raise ValueError(f"{len(population)} probes for {t} iterations")
        if history is not None and [h.get("t") for h in history] != list(range(t)):
            raise ValueError("its history does not match its iterations")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise DamagedFileError(path, f"not a search state: {e}", _STATE_FIX) from None
    return state


def _restore_history(path: Path, state: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Rewrite ``history.jsonl`` to exactly the saved iterations' lines, and return them.

    The state keeps every line it saved (with their timings), so the file is rebuilt from it
    whatever happened to the file: a torn last line, missing lines (a kill between the append
    and the state's save leaves one line more than the state), or a deleted file. A state
    without lines (written before they were kept) keeps the file's complete lines.
    """
    if state is None:  # a new search, or one killed before its first iteration was saved
        write_text(path, "")
        return []
    t = int(state["t"])
    saved = json.loads(state.get("history", "null"))
    if saved is None:
        saved = read_jsonl(path, torn_tail_ok=True)[:t]
        if [h.get("t") for h in saved] != list(range(t)):
            raise DamagedFileError(
                path,
                f"{len(saved)} complete lines for {t} iterations, and the search state keeps "
                "no copy",
                "start the run again with --overwrite",
            )
    write_text(path, "".join(json.dumps(h) + "\n" for h in saved))
    return list(saved)


def search(searcher: ActionSearcher, run: RunDir, resume: bool, progress: bool) -> SearchOutcome:
    """Run the iterations not yet done (all, unless ``resume`` finds a saved state).

    With several probes per iteration, or inside :func:`embudget.search.parallel.ray_workers`,
    :func:`embudget.search.parallel.search_parallel` runs them instead.
    """
    from embudget.search import parallel  # imports this module

    if searcher.cfg.search.probes_per_iteration != 1 or parallel.active_pool() is not None:
        return parallel.search_parallel(searcher, run, resume, progress)
    cfg = searcher.cfg
    s = cfg.search
    state_path = run.file(STATE_FILE)
    history_path = run.file(HISTORY_FILE)
    population: list[dict[str, Any]] = []
    t_start, seconds = 0, 0.0
    state = _load_state(state_path, cfg, run) if resume and state_path.is_file() else None
    if state is not None:
        searcher.load_state_dict(state["searcher"])
        population = json.loads(state["population"])
        t_start, seconds = int(state["t"]), float(state["seconds"])
        log.info("resuming search at iteration %d", t_start)
    history = _restore_history(history_path, state)
    bar = tqdm(total=s.iterations, initial=t_start, desc="search", disable=not progress)
    try:
        for t in range(t_start, s.iterations):
            t0 = time.perf_counter()
            batch = searcher.sampler.sample_batch(
                s.sampler.candidates, np_rng(cfg.seed, "sampler", t)
            )
            t1 = time.perf_counter()
            best = best_probe(population)
            best_action = Action.from_dict(best["action"]) if best is not None else None
            idx, strategy = searcher.select(t, batch.hist_u, batch.hist_v, best_action)
            action = Action(batch.hist_u[idx], batch.hist_v[idx], batch.records[idx])
            predicted = None
            if searcher.predictor is not None:
                with torch.no_grad():
                    predicted = float(
                        searcher.predictor(action.hist_u[None], action.hist_v[None])[0]
                    )
            t2 = time.perf_counter()
            r, q, train_s, eval_s = searcher.probe(action, t)
            t3 = time.perf_counter()
            logs: list[dict[str, float]] = []
            if searcher.trainer is not None:
                searcher.trainer.add(action, r)
                logs = searcher.trainer.update(
                    np_rng(cfg.seed, "predictor", t), s.predictor.updates
                )
            t4 = time.perf_counter()
            seconds += t4 - t0
            population.append({"t": t, "fitness": r, "quality": q, "action": action.to_dict()})
            best_now = best_probe(population)
            assert best_now is not None
            us, vs = searcher.assignment.sizes(action)
            rec = {
                "t": t,
                "strategy": strategy,
                "candidate": idx,
                "n_clamped": batch.n_clamped,
                "predicted": predicted,
                "fitness": r,
                "quality": q,
                "q0": searcher.q0,
                "best_fitness": best_now["fitness"],
                "predictor_loss": [lg["loss"] for lg in logs],
                "params_used": params_used(us, vs),  # of one table per entity
                "user_size_mean": float(us.mean()),
                "item_size_mean": float(vs.mean()),
                "record": action.record,
                "hist_u": action.hist_u.tolist(),
                "hist_v": action.hist_v.tolist(),
                "seconds": {
                    "sample": t1 - t0,
                    "select": t2 - t1,
                    "probe_train": train_s,
                    "probe_eval": eval_s,
                    "predictor": t4 - t3,
                    "wall": t4 - t0,
                },
            }
            history.append(json.loads(json.dumps(rec, default=_jsonable)))
            append_jsonl(history_path, history[-1])
            save_torch(
                state_path,
                {
                    "t": t + 1,
                    "seconds": seconds,
                    "population": json.dumps(population, default=_jsonable),
                    "history": json.dumps(history),
                    "searcher": searcher.state_dict(),
                    "config_hash": cfg.hash(),
                },
            )
            bar.update(1)
            bar.set_postfix(best=f"{best_now['fitness']:.4f}", r=f"{r:.4f}")
            log.info(
                "iteration %d (%s): fitness %.4f (predicted %s), best %.4f, %.1fs",
                t,
                strategy,
                r,
                "-" if predicted is None else f"{predicted:.4f}",
                best_now["fitness"],
                t4 - t0,
            )
    finally:
        bar.close()
    return SearchOutcome(population, seconds)


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
