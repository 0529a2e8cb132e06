"""The BET search and its baselines, end to end, resumable (bet.md §5–§7, §9, §14.5–14.6).

One function, :func:`run_search`, drives every method through the same harness:

- ``full``: the pretrained full-size model Θ0 (cached by config hash), tested;
- ``su`` / ``sr``: one size assignment, trained from scratch to convergence, tested;
- ``bet`` / ``bet-random`` / ``bet-simple``: T iterations of (sample m actions, select one by the
  t mod 5 schedule, probe it by fine-tuning a fresh copy of Θ0, update the predictor), then the
  top-k actions retrained from scratch, the best chosen on validation, the winner tested once.

Every iteration's randomness comes from named streams keyed by (seed, purpose, t), and the search
state is saved atomically after each iteration, so a resumed search equals an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from embudget import __version__
from embudget.budget.core import (
    Budget,
    budget_summary,
    check_budget,
    check_feasible,
    random_sizes,
    sampler_budget,
    uniform_sizes,
)
from embudget.budget.memory import memory_report, params_for_bytes
from embudget.config import RunConfig
from embudget.data.dataset import Dataset
from embudget.errors import RunDirError
from embudget.io import (
    RunDir,
    append_jsonl,
    file_lock,
    load_torch,
    save_npz,
    save_torch,
    write_json,
    write_text,
)
from embudget.models.base import Backbone
from embudget.pipeline.experiment import (
    PRETRAIN_STREAM,
    load_data,
    make_model,
    metrics_block,
    open_run,
    save_per_user,
    save_weights,
    selection_users,
    start_run,
    tables_per_entity,
)
from embudget.search.actions import Action, RankAssignment
from embudget.search.nested import NestedSizes
from embudget.search.predictor import (
    DeepSetsPredictor,
    FitnessPredictor,
    PredictorTrainer,
    SimplePredictor,
    greedy,
    nearest,
)
from embudget.search.sampler import BoundedSampler
from embudget.seeds import int_seed, np_rng, torch_generator
from embudget.tables.compact import compact_pays, is_compact, load_weights, to_compact
from embudget.training.evaluate import EvalResult
from embudget.training.fit import Schedule, finetune, fit, validate, validation_users

log = logging.getLogger(__name__)

SEARCH_METHODS = ("bet", "bet-random", "bet-simple")
STRATEGIES = {0: "greedy", 1: "greedy", 2: "greedy", 3: "random", 4: "nearest"}


# --------------------------------------------------------------------------------------------
# budget and sizes
# --------------------------------------------------------------------------------------------
def resolve_budget(cfg: RunConfig, dataset: Dataset) -> tuple[int, int]:
    """(B for the whole model's ID tables, B for one size per entity).

    A byte budget becomes B after subtracting the size-independent overhead of the chosen
    storage (bet.md §14.2, :func:`embudget.budget.memory.params_for_bytes`).
    """
    b = cfg.budget
    tables = tables_per_entity(cfg)
    if b.bytes is not None:
        total = params_for_bytes(
            b.bytes,
            dataset.n_users,
            dataset.n_items,
            cfg.model.d_max,
            b.dtype,
            b.layout,
            tables,
            cfg.search.size_step,
        )
    else:
        budget = Budget(sparsity=b.sparsity, kept_fraction=b.kept_fraction, params=b.params)
        total = budget.resolve(tables * dataset.n_entities, cfg.model.d_max)
    per_entity = sampler_budget(total, tables)
    if cfg.search.method != "full":  # fail before any training, with the ways out
        check_feasible(per_entity, dataset.n_entities, cfg.model.d_max, cfg.search.size_step)
    return total, per_entity


# --------------------------------------------------------------------------------------------
# pretraining (cached)
# --------------------------------------------------------------------------------------------
def pretrain_key(cfg: RunConfig, dataset: Dataset) -> str:
    """Hash of what Θ0 depends on: data, split, backbone, training settings, seed."""
    procedure = cfg.procedure()
    blob = json.dumps(
        {
            "fingerprint": dataset.fingerprint(),
            "data": procedure["data"],
            "model": procedure["model"],
            "train": procedure["train"],
            "ks": list(cfg.eval.ks),
            "seed": cfg.seed,
            "format": 1,
            **_nested_key(cfg),
        },
        sort_keys=True,
    ).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def _nested_key(cfg: RunConfig) -> dict[str, Any]:
    """Nested pretraining's settings (absent for standard Θ0, so its cache keys stay valid)."""
    s = cfg.search
    if s.pretrain != "nested":
        return {}
    return {"nested": {"kept_min": s.nested_kept_min, "size_step": s.size_step}}


def nested_sizes(cfg: RunConfig, dataset: Dataset) -> NestedSizes | None:
    """The per-step truncations of nested pretraining, or None for standard Θ0."""
    if cfg.search.pretrain != "nested":
        return None
    return NestedSizes(
        RankAssignment(dataset.user_freq, dataset.item_freq),
        cfg.model.d_max,
        cfg.search.nested_kept_min,
        int_seed(cfg.seed, PRETRAIN_STREAM),
        cfg.search.size_step,
    )


@dataclass
class Pretrained:
    state: dict[str, torch.Tensor]
    valid: dict[str, float]
    seconds: float
    cached: bool


def pretrain(
    cfg: RunConfig, dataset: Dataset, device: torch.device, progress: bool = False
) -> Pretrained:
    """Θ0: the full-size backbone trained to convergence (every prefix trained, when nested),
    loaded from the cache when present."""
    cache = Path(cfg.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    key = pretrain_key(cfg, dataset)
    path = cache / f"pretrain-{cfg.model.name}-{key}.pt"
    # one process trains a given Θ0; another that needs it (a second `bench` sharing the
    # cache) waits for it and loads the result, instead of training it again beside it
    lock = path.with_suffix(".lock")
    with file_lock(lock, wait=False) as free:
        if not free:
            log.info("another process is pretraining %s; waiting for it", path.name)
    with file_lock(lock):
        return _load_or_pretrain(cfg, dataset, device, path, key, progress)


def _load_or_pretrain(
    cfg: RunConfig, dataset: Dataset, device: torch.device, path: Path, key: str, progress: bool
) -> Pretrained:
    if path.is_file():
        blob = load_torch(path, map_location=device)
        log.info("pretrained model from cache %s", path)
        return Pretrained(blob["model"], blob["valid"], float(blob["seconds"]), True)
    checkpoint = path.with_suffix(".ckpt.pt")
    model = make_model(cfg, dataset, device, PRETRAIN_STREAM)
    fr = fit(
        model,
        dataset,
        cfg.train,
        seed=int_seed(cfg.seed, PRETRAIN_STREAM),
        ks=cfg.eval.ks,
        eval_users=selection_users(cfg, dataset),
        eval_batch_users=cfg.eval.batch_users,
        checkpoint=checkpoint,
        progress=progress,
        desc=f"pretrain {cfg.model.name}",
        sizes_at=nested_sizes(cfg, dataset),
    )
    assert fr.valid is not None
    valid = {k: float(v) for k, v in fr.valid.means.items()}
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    save_torch(path, {"model": state, "valid": valid, "seconds": fr.seconds, "key": key})
    checkpoint.unlink(missing_ok=True)
    return Pretrained(state, valid, fr.seconds, False)


# --------------------------------------------------------------------------------------------
# the search
# --------------------------------------------------------------------------------------------
def make_sampler(cfg: RunConfig, dataset: Dataset, action_budget: int) -> BoundedSampler:
    """The bounded sampler of the config's search settings at ``action_budget``."""
    s = cfg.search
    return BoundedSampler(
        dataset.n_users,
        dataset.n_items,
        action_budget,
        d_max=cfg.model.d_max,
        max_attempts=s.max_attempts,
        on_exhausted=s.on_exhausted,
        size_step=s.size_step,
    )


class Searcher:
    """Probes actions against Θ0 and runs the T-iteration loop (bet.md §5–§6)."""

    def __init__(
        self,
        cfg: RunConfig,
        dataset: Dataset,
        device: torch.device,
        theta0: Pretrained,
        assignment: RankAssignment,
        action_budget: int,
    ) -> None:
        self.cfg, self.dataset, self.device = cfg, dataset, device
        self.assignment = assignment
        s = cfg.search
        self.sampler = make_sampler(cfg, dataset, action_budget)
        self.theta0 = theta0
        self.model = make_model(cfg, dataset, device, "probe")
        if s.finetune_steps is not None:
            self.probe_steps = s.finetune_steps
        else:
            epochs = s.finetune_epochs
            if epochs is None:
                epochs = 15 if cfg.model.name == "ngcf" else 10
            self.probe_steps = epochs * math.ceil(dataset.train.nnz / cfg.train.batch_users)
        self.probe_schedule = Schedule(
            s.finetune_lr, s.finetune_lr_decay, s.finetune_lr_decay_every, s.finetune_lr_min
        )
        self.fitness_users = validation_users(
            dataset, s.fitness_user_fraction, cfg.seed, "fitness-users"
        )
        self.model.load_state_dict(theta0.state)
        self.q0 = self._quality()
        self.predictor: FitnessPredictor | None = None
        self.trainer: PredictorTrainer | None = None
        gen = torch_generator(cfg.seed, "predictor-init")
        linear = s.predictor_output == "linear"
        if s.method == "bet":
            self.predictor = DeepSetsPredictor.from_freqs(
                dataset.user_freq, dataset.item_freq, cfg.model.d_max, gen, linear
            )
        elif s.method == "bet-simple":
            self.predictor = SimplePredictor(
                dataset.n_users,
                dataset.n_items,
                cfg.model.d_max,
                generator=gen,
                linear_output=linear,
            )
        if self.predictor is not None:
            self.trainer = PredictorTrainer(self.predictor, batch=s.predictor_update == "batch")

    def _quality(self) -> float:
        res = validate(self.model, self.dataset, "valid", (5, 10, 20), users=self.fitness_users)
        return float(res.means["quality"])

    def probe(self, action: Action, t: int) -> tuple[float, float, float, float]:
        """Fine-tune a fresh copy of Θ0 with the action's sizes; (r, Q, train s, eval s)."""
        t0 = time.perf_counter()
        self.model.load_state_dict(self.theta0.state)
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

    def select(
        self, t: int, hu: np.ndarray, hv: np.ndarray, best: Action | None
    ) -> tuple[int, str]:
        method = self.cfg.search.method
        strategy = "random" if method == "bet-random" else STRATEGIES[t % 5]
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


def _best(population: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Highest measured fitness; ties go to the earlier iteration."""
    if not population:
        return None
    return max(population, key=lambda p: (p["fitness"], -p["t"]))


def _truncate_jsonl(path: Path, n_lines: int) -> None:
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)[:n_lines]
    write_text(path, "".join(lines))


def _search_loop(
    searcher: Searcher, run: RunDir, resume: bool, progress: bool
) -> tuple[list[dict[str, Any]], float]:
    cfg = searcher.cfg
    s = cfg.search
    state_path = run.file("search_state.pt")
    history_path = run.file("history.jsonl")
    population: list[dict[str, Any]] = []
    t_start, seconds = 0, 0.0
    if resume and state_path.is_file():
        state = load_torch(state_path)
        if state["config_hash"] != cfg.hash():
            raise RunDirError(f"cannot resume {run.path}: the search state has another config")
        searcher.load_state_dict(state["searcher"])
        population = json.loads(state["population"])
        t_start, seconds = int(state["t"]), float(state["seconds"])
        log.info("resuming search at iteration %d", t_start)
    _truncate_jsonl(history_path, t_start)
    bar = tqdm(total=s.iterations, initial=t_start, desc="search", disable=not progress)
    try:
        for t in range(t_start, s.iterations):
            t0 = time.perf_counter()
            batch = searcher.sampler.sample_batch(s.candidates, np_rng(cfg.seed, "sampler", t))
            t1 = time.perf_counter()
            best = _best(population)
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
                    np_rng(cfg.seed, "predictor", t), s.predictor_updates
                )
            t4 = time.perf_counter()
            seconds += t4 - t0
            entry = {"t": t, "fitness": r, "quality": q, "action": action.to_dict()}
            population.append(entry)
            best_now = _best(population)
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
                "params_used": int(us.sum() + vs.sum()),
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
            append_jsonl(history_path, json.loads(json.dumps(rec, default=_jsonable)))
            save_torch(
                state_path,
                {
                    "t": t + 1,
                    "seconds": seconds,
                    "population": json.dumps(population, default=_jsonable),
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
    return population, seconds


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


# --------------------------------------------------------------------------------------------
# retraining and the run directory
# --------------------------------------------------------------------------------------------
@dataclass
class Trained:
    model: Backbone
    valid: EvalResult
    seconds: float
    best_step: int


def train_sizes(
    cfg: RunConfig,
    dataset: Dataset,
    device: torch.device,
    user_sizes: np.ndarray,
    item_sizes: np.ndarray,
    stream: str,
    checkpoint: Path | None,
    progress: bool,
    init: dict[str, torch.Tensor] | None = None,
) -> Trained:
    """A backbone with fixed sizes from step 0, trained to convergence (bet.md §7.2): fresh, or
    with ``init`` (fast mode's warm start) Θ0's weights truncated to the sizes.

    The tables are compact (jagged) whenever that is smaller than the masked form, so the
    parameters, gradients and Adam state follow the budget; the trajectory is the same.
    """
    model = make_model(cfg, dataset, device, stream)
    if init is not None:
        model.load_state_dict(init)
    model.set_sizes(user_sizes, item_sizes)
    if compact_pays([user_sizes, item_sizes], cfg.model.d_max):
        to_compact(model)
    s = cfg.search
    train = dataclasses.replace(
        cfg.train,
        patience=s.retrain_patience or cfg.train.patience,
        max_steps=s.retrain_max_steps or cfg.train.max_steps,
    )
    fr = fit(
        model,
        dataset,
        train,
        seed=int_seed(cfg.seed, stream),
        ks=cfg.eval.ks,
        eval_users=selection_users(cfg, dataset),
        eval_batch_users=cfg.eval.batch_users,
        checkpoint=checkpoint,
        progress=progress,
        desc=stream,
        validate_first=init is not None and s.retrain_validate_first,
    )
    assert fr.valid is not None
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    return Trained(model, fr.valid, fr.seconds, fr.best_step)


def run_search(
    cfg: RunConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run one method at one budget and write its run directory (``embudget search``)."""
    run, finished = open_run(cfg, out, overwrite, resume)
    if finished is not None:
        return finished
    handler = run.attach_log()
    try:
        return _run_search(cfg, run, resume, progress)
    finally:
        RunDir.detach_log(handler)


def _run_search(cfg: RunConfig, run: RunDir, resume: bool, progress: bool) -> dict[str, Any]:
    device = start_run(cfg, run)
    method = cfg.search.method
    t_start = time.perf_counter()
    dataset = load_data(cfg)
    total_budget, action_budget = resolve_budget(cfg, dataset)
    assignment = RankAssignment(dataset.user_freq, dataset.item_freq)
    d_max, tables = cfg.model.d_max, tables_per_entity(cfg)
    log.info(
        "%s on %s/%s: budget %d parameters (%d per entity table)",
        method,
        dataset.name,
        cfg.model.name,
        total_budget,
        action_budget,
    )

    search_seconds, retrain_seconds, n_probes = 0.0, 0.0, 0
    warm = cfg.search.retrain_init == "shared"
    needs_theta0 = warm or method not in ("su", "sr")
    theta0 = pretrain(cfg, dataset, device, progress) if needs_theta0 else None
    pretrain_seconds = 0.0 if theta0 is None or theta0.cached else theta0.seconds
    candidates: list[tuple[str, np.ndarray, np.ndarray]] = []
    if method == "su":
        candidates = [
            ("su", *uniform_sizes(dataset.n_users, dataset.n_items, action_budget, d_max))
        ]
    elif method == "sr":
        rng = np_rng(cfg.seed, "sr-sizes")
        candidates = [
            ("sr", *random_sizes(dataset.n_users, dataset.n_items, action_budget, d_max, rng))
        ]
    elif method in SEARCH_METHODS:
        assert theta0 is not None
        searcher = Searcher(cfg, dataset, device, theta0, assignment, action_budget)
        population, search_seconds = _search_loop(searcher, run, resume, progress)
        n_probes = len(population)
        ranked = sorted(population, key=lambda p: (-p["fitness"], p["t"]))
        for p in ranked[: cfg.search.retrain_top]:
            us, vs = assignment.sizes(Action.from_dict(p["action"]))
            candidates.append((f"retrain-t{p['t']}", us, vs))
        del searcher

    if method == "full":  # Θ0 itself: the unbudgeted reference
        assert theta0 is not None
        model = make_model(cfg, dataset, device, PRETRAIN_STREAM)
        model.load_state_dict(theta0.state)
        valid = validate(model, dataset, "valid", cfg.eval.ks, batch_users=cfg.eval.batch_users)
        chosen: dict[str, Any] = {"name": "full"}
    else:
        init = theta0.state if warm and theta0 is not None else None
        model, valid, chosen, retrain_seconds = _retrain(
            cfg, dataset, device, run, candidates, action_budget, resume, progress, init
        )
    user_sizes = model.user_tables()[0].sizes.cpu().numpy().astype(np.int64)
    item_sizes = model.item_tables()[0].sizes.cpu().numpy().astype(np.int64)
    if method != "full":
        check_budget(user_sizes, item_sizes, action_budget, d_max)
    test = validate(model, dataset, "test", cfg.eval.ks, batch_users=cfg.eval.batch_users)

    if method == "full":  # unbudgeted: report against the whole table
        total_budget = tables * d_max * dataset.n_entities
    summary = budget_summary(
        user_sizes, item_sizes, total_budget, d_max, model.dense_params(), tables
    )
    b = cfg.budget
    mem = memory_report(model, dtype=b.dtype, layout=b.layout)
    save_npz(
        run.file("sizes.npz"),
        user_sizes=user_sizes.astype(np.int16),
        item_sizes=item_sizes.astype(np.int16),
        user_ids=dataset.user_ids,
        item_ids=dataset.item_ids,
    )
    save_weights(model, run.file("model.safetensors"))
    save_per_user(run.file("per_user_valid.npz"), valid)
    save_per_user(run.file("per_user_test.npz"), test)
    results: dict[str, Any] = {
        "method": method,
        "dataset": dataset.name,
        "protocol": dataset.protocol,
        "split_fingerprint": dataset.fingerprint(),
        "model": cfg.model.name,
        "seed": cfg.seed,
        "config_hash": cfg.hash(),
        "embudget_version": __version__,
        "budget": {
            "sparsity": cfg.budget.sparsity,
            "kept_fraction": cfg.budget.kept_fraction,
            "params_budget": total_budget,
            "params_used": summary["params_used"],
            **{k: v for k, v in summary.items() if k not in ("budget_params", "params_used")},
            "bytes_budget": b.bytes,
            "bytes_used": mem["bytes"]["embedding"],
            "bytes": mem["bytes"],
            "dtype": b.dtype,
            "layout": b.layout,
            "storage": "compact" if is_compact(model) else "masked",
        },
        "valid": metrics_block(valid),
        "test": metrics_block(test),
        "chosen": chosen,
        "full_valid": theta0.valid if theta0 is not None else None,
        "n_probes": n_probes,
        "pretrain_seconds": pretrain_seconds,
        "search_seconds": search_seconds,
        "retrain_seconds": retrain_seconds,
        "total_seconds": time.perf_counter() - t_start,
        "device": str(device),
    }
    write_json(run.file("results.json"), results)
    run.file("search_state.pt").unlink(missing_ok=True)
    return results


def _retrain(
    cfg: RunConfig,
    dataset: Dataset,
    device: torch.device,
    run: RunDir,
    candidates: list[tuple[str, np.ndarray, np.ndarray]],
    action_budget: int,
    resume: bool,
    progress: bool,
    init: dict[str, torch.Tensor] | None = None,
) -> tuple[Backbone, EvalResult, dict[str, Any], float]:
    """Retrain every candidate (from scratch, or from ``init`` truncated); choose by validation
    quality (bet.md §7.3)."""
    done_path = run.file("retrain.jsonl")
    done: dict[str, dict[str, Any]] = {}
    if resume and done_path.exists():
        for line in done_path.read_text().splitlines():
            d = json.loads(line)
            done[d["name"]] = d
    elif done_path.exists():
        done_path.unlink()
    seconds = sum(float(d["seconds"]) for d in done.values())
    best: tuple[float, str] | None = None
    for name, us, vs in candidates:
        check_budget(us, vs, action_budget, cfg.model.d_max)
        weights = run.file(f"{name}.safetensors")
        if name in done and weights.is_file():
            q = float(done[name]["valid"]["quality"])
        else:
            tr = train_sizes(
                cfg, dataset, device, us, vs, name, run.file(f"{name}.ckpt.pt"), progress, init
            )
            save_weights(tr.model, weights)
            q = float(tr.valid.means["quality"])
            rec = {
                "name": name,
                "valid": metrics_block(tr.valid),
                "seconds": tr.seconds,
                "best_step": tr.best_step,
            }
            append_jsonl(done_path, rec)
            seconds += tr.seconds
            log.info("retrained %s: valid Q %.4f (%.0fs)", name, q, tr.seconds)
        if best is None or q > best[0]:
            best = (q, name)
    assert best is not None
    name = best[1]
    us, vs = next((u, v) for n, u, v in candidates if n == name)
    model = make_model(cfg, dataset, device, name)
    model.set_sizes(us, vs)
    from safetensors.torch import load_file

    state = load_file(str(run.file(f"{name}.safetensors")), device=str(device))
    load_weights(model, state)  # compact or masked, as it was trained
    valid = validate(model, dataset, "valid", cfg.eval.ks, batch_users=cfg.eval.batch_users)
    return model, valid, {"name": name, "valid_quality": best[0]}, seconds
