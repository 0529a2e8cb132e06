"""BPR training: to convergence with early stopping (pretrain, retrain, SU/SR) and fixed-length
fine-tuning (search probes). bet.md §6, §7.2, §8.1.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from embudget.config import TrainConfig
from embudget.data.dataset import Dataset
from embudget.data.sampling import BPRSampler
from embudget.errors import RunDirError
from embudget.io import load_torch, save_torch
from embudget.models.base import Backbone
from embudget.result import Evaluation, Training
from embudget.seeds import int_seed, np_rng
from embudget.training.adam import FusedAdam
from embudget.training.distributed import Group, batch_slice, current
from embudget.training.evaluate import EvalResult, evaluate
from embudget.training.malloc import retain_freed_memory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schedule:
    """Adam learning rate with a step decay: lr_t = max(lr_min, lr · decay^⌊t / every⌋)."""

    lr: float = 0.03
    decay: float = 0.95
    every: int = 200
    lr_min: float = 0.001

    @classmethod
    def from_train(cls, cfg: TrainConfig) -> Schedule:
        return cls(cfg.lr, cfg.lr_decay, cfg.lr_decay_every, cfg.lr_min)

    def lr_at(self, step: int) -> float:
        return max(self.lr_min, self.lr * self.decay ** (step // self.every))


#: Per-step sizes for nested pretraining: step -> (user sizes, item sizes). A pure function of
#: the step, so a resumed run draws the same truncations.
SizesAt = Callable[[int], tuple[np.ndarray, np.ndarray]]


@dataclass
class FitResult:
    """Outcome of :func:`fit`: the best validation evaluation and how it was reached."""

    valid: EvalResult | None
    best_step: int
    steps: int
    stopped_early: bool
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)

    def training(self) -> Training:
        """How the fit ended and its validation curve, as results record it."""
        curve = tuple(
            Evaluation(
                step=int(h["step"]),
                loss=None if h["loss"] is None else float(h["loss"]),
                valid={k: float(v) for k, v in h["valid"].items()},
                improved=bool(h["improved"]),
            )
            for h in self.history
        )
        return Training(self.steps, self.best_step, self.stopped_early, curve)


class _Stepper:
    """One optimiser, one sampler, one schedule: the part shared by fit and finetune."""

    def __init__(
        self,
        model: Backbone,
        dataset: Dataset,
        schedule: Schedule,
        batch_users: int,
        seed: int,
        device: torch.device,
        sizes_at: SizesAt | None = None,
        group: Group | None = None,
    ) -> None:
        retain_freed_memory()  # ~15 % faster steps, no number changes (training/malloc.py)
        self.model = model
        self.sizes_at = sizes_at
        self.schedule = schedule
        self.device = device
        #: data parallel (training.distributed): this rank trains its slice of every batch
        self.group = group
        model.reseed(int_seed(seed, "dropout"))  # the run's own dropout stream (NGCF)
        self.sampler = BPRSampler(
            dataset.train, batch_users=batch_users, rng=np_rng(seed, "batches")
        )
        # The fused kernel is ~9x faster than the default per-tensor Adam on CPU for a
        # Gowalla-sized table (0.047 s vs 0.42 s per step, 1 thread): it dominates MF steps.
        # FusedAdam is that kernel without torch.optim's import of the compiler stack.
        self.opt = FusedAdam(model.parameters(), lr=schedule.lr_at(0))
        self.step = 0
        self._loss_sum = torch.zeros((), device=device)
        self._loss_n = 0

    def run(self, n_steps: int, bar: Any = None, until: float | None = None) -> None:
        """Train ``n_steps`` steps, or fewer (at least one) when ``time.perf_counter()`` has
        passed ``until`` after a step."""
        self.model.train()
        for _ in range(n_steps):
            self.opt.lr = self.schedule.lr_at(self.step)
            if self.sizes_at is not None:  # nested pretraining: this step's truncation
                self.model.set_sizes(*self.sizes_at(self.step))
            if self.group is None:
                users, pos, neg = (
                    t.to(self.device, non_blocking=True) for t in self.sampler.sample()
                )
                loss = self.model.loss(users, pos, neg)
                self.opt.zero_grad()
                loss.backward()
            else:
                loss = self._slice_backward(self.group)
            self.opt.step()
            self._loss_sum += loss.detach()
            self._loss_n += 1
            self.step += 1
            if bar is not None:
                bar.update(1)
            if until is not None and time.perf_counter() >= until:
                return

    def _slice_backward(self, group: Group) -> torch.Tensor:
        """The gradient of the global batch's loss, from this rank's slice and the others'
        (every rank draws the same batch); returns the global batch's loss."""
        batch = self.sampler.sample()
        n = int(batch[0].shape[0])
        sl = batch_slice(n, group.rank, group.size)
        self.opt.zero_grad()
        loss = None
        if sl.stop > sl.start:
            users, pos, neg = (t[sl].to(self.device, non_blocking=True) for t in batch)
            loss = self.model.loss(users, pos, neg)
            loss.backward()
        return group.sync_grads(self.opt.params, loss, (sl.stop - sl.start) / max(n, 1))

    def mean_loss(self) -> float:
        """Mean loss since the last call (syncs the device once)."""
        v = float(self._loss_sum) / max(1, self._loss_n)
        self._loss_sum.zero_()
        self._loss_n = 0
        return v

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "sampler": self.sampler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "model_rng": self.model.random_state(),
            "step": self.step,
            # the loss since the last validation, which a checkpoint between two has seen
            "loss_sum": self._loss_sum.detach().clone().cpu(),
            "loss_n": self._loss_n,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        self.model.load_random_state(state.get("model_rng", {}))  # older checkpoints lack it
        self.step = int(state["step"])
        # checkpoints from before mid-window saving were all written right after a validation
        self._loss_sum = state.get("loss_sum", torch.zeros(())).to(self.device).clone()
        self._loss_n = int(state.get("loss_n", 0))


def validate(
    model: Backbone,
    dataset: Dataset,
    split: str = "valid",
    ks: Sequence[int] = (5, 10, 20),
    users: np.ndarray | None = None,
    batch_users: int | None = None,
) -> EvalResult:
    """Full-ranking evaluation of ``model`` in eval mode (no dropout, no grad).

    The cut-offs 5, 10 and 20 are always included, so that quality Q is always reported.
    """
    ks = sorted(set(ks) | {5, 10, 20})
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            return evaluate(
                model.scorer(),
                dataset,
                split=split,
                ks=ks,
                users=users,
                batch_users=batch_users,
                device=device,
            )
    finally:
        model.train(was_training)


def validation_users(dataset: Dataset, fraction: float, seed: int, stream: str) -> np.ndarray:
    """The users with a validation item, or for ``fraction`` < 1 a fixed random sample of them
    (sorted), drawn from ``stream`` of ``seed``: every run of a config scores the same users,
    so comparisons between runs carry no sampling noise (common random numbers)."""
    users = np.flatnonzero(np.diff(dataset.valid.indptr) > 0)
    if fraction < 1.0:
        n = max(1, round(fraction * users.size))
        users = np.sort(users[np_rng(seed, stream).choice(users.size, n, replace=False)])
    return users


@dataclass(frozen=True)
class ValidationPlan:
    """When :func:`fit` validates and when it gives up."""

    every: int  #: steps between two validations
    patience: int  #: validations without a counted improvement before training stops


def validation_plan(cfg: TrainConfig, n_train: int) -> ValidationPlan:
    """bet.md's rule, validation every ``cfg.eval_every_steps`` steps and a stop after
    ``cfg.patience`` of them without improvement, on a finer grid when ``cfg.eval_every_epochs``
    passes over the ``n_train`` training interactions (an epoch is ``n_train / batch_users``
    steps) come first. The stop keeps its length in steps, ``patience × eval_every_steps``:
    validations come more often, so more of them are allowed.

    bet.md's 2,000 steps are 39 epochs on Gowalla and 26 on Yelp2018, but 400 on ML-100K and
    2,400 on gowalla-mini, where models peak and overfit between two validations; MF on Last.fm
    also kept improving for thousands of steps, which a stop after three 100-step windows cut
    short (RESULTS.md, "Validation on small data").
    """
    every = cfg.eval_every_steps
    if cfg.eval_every_epochs is not None:
        every = max(1, min(every, round(cfg.eval_every_epochs * n_train / cfg.batch_users)))
    return ValidationPlan(every, math.ceil(cfg.patience * cfg.eval_every_steps / every))


#: Epochs between two validations above which a run warns: on ML-100K, MF's and LightGCN's Θ0
#: peaked within 80 epochs, and bet.md's 2,000 steps are 400 epochs there (760 on Last.fm).
COARSE_VALIDATION_EPOCHS = 100


def warn_if_coarse_validation(cfg: TrainConfig, dataset: Dataset) -> None:
    """Log a warning when validations are more than :data:`COARSE_VALIDATION_EPOCHS` epochs
    apart on ``dataset``: early stopping then keeps whichever weights the first validation
    found, long after the model peaked."""
    n_train = dataset.train.nnz
    every = validation_plan(cfg, n_train).every
    epochs = every * cfg.batch_users / max(n_train, 1)
    if epochs > COARSE_VALIDATION_EPOCHS:
        log.warning(
            "validation every %d steps is %.0f epochs of these %d training interactions; on "
            "small data models peak and overfit between such validations (RESULTS.md, "
            '"Validation on small data"): --set train.eval_every_epochs=40 validates at '
            "least every 40 epochs",
            every,
            epochs,
            n_train,
        )


@dataclass
class StopRule:
    """Early stopping on validation quality Q: stop after ``patience`` validations without a
    counted improvement. A validation improves when Q beats the best so far (its weights are
    kept); it counts, resetting the patience, when Q beats the last validation that counted by
    more than ``min_delta`` (bet.md: 0, so every strict improvement counts). A counted
    validation always improves: the best is never more than ``min_delta`` above the last
    counted one, or it would have counted."""

    patience: int
    min_delta: float = 0.0
    best_q: float = -math.inf
    reset_q: float = -math.inf  #: Q of the last validation that counted
    bad: int = 0  #: validations since it

    def observe(self, q: float) -> tuple[bool, bool]:
        """Take a validation's Q; returns whether it improved and whether it counted."""
        improved, counted = q > self.best_q, q > self.reset_q + self.min_delta
        if improved:
            self.best_q = q
        if counted:
            self.reset_q = q
        self.follow(counted)
        return improved, counted

    def follow(self, counted: bool) -> None:
        """Count a validation judged elsewhere (another rank's follower)."""
        self.bad = 0 if counted else self.bad + 1

    @property
    def stop(self) -> bool:
        return self.bad >= self.patience


def earliest_stop(
    cfg: TrainConfig, plan: ValidationPlan, step: int, bad: int, *, evaluated: bool
) -> int:
    """The step at which :func:`fit` stops if validation quality never improves again.

    Training stops after ``plan.patience`` evaluations without improvement, one every
    ``plan.every`` steps, or at ``cfg.max_steps``. Before the first evaluation (which always
    improves on nothing) that is ``patience + 1`` windows away, afterwards ``patience - bad``.
    Every improvement moves it out: it is a lower bound on the run's length, and the progress
    bar's total.
    """
    windows = plan.patience - bad if evaluated else plan.patience + 1
    return min(cfg.max_steps, step + max(windows, 0) * plan.every)


def _fork_rng(device: torch.device) -> Any:
    devices = [device] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)


def fit(
    model: Backbone,
    dataset: Dataset,
    cfg: TrainConfig,
    *,
    seed: int,
    ks: Sequence[int] = (5, 10, 20),
    eval_users: np.ndarray | None = None,
    eval_batch_users: int | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_seconds: float | None = None,
    progress: bool = False,
    on_eval: Callable[[dict[str, Any]], None] | None = None,
    desc: str = "train",
    sizes_at: SizesAt | None = None,
    validate_first: bool = False,
) -> FitResult:
    """Train to convergence: validate on quality Q as :func:`validation_plan` says (every
    ``cfg.eval_every_steps`` steps, stop after ``cfg.patience`` validations without strict
    improvement), restore the best weights. With ``cfg.min_delta`` > 0 gains at the level of
    noise do not prolong training (:class:`StopRule`); the best weights still follow every
    strict improvement.

    With ``checkpoint``, the full training state is saved (atomically) after every evaluation,
    and also every ``checkpoint_seconds`` between two (a slow run, hours between validations,
    loses at most that much work), and an existing checkpoint is resumed from, so an
    interrupted run continues where it was, with the numbers of an uninterrupted one.
    With ``sizes_at`` (nested pretraining), every step trains the truncation it returns and
    every validation is at full size. With ``validate_first`` (warm starts), the weights are
    validated before the first step too, and kept if no later evaluation beats them.

    Under torchrun with P > 1 processes (:mod:`embudget.training.distributed`) every rank
    trains its slice of each batch; rank 0 validates, saves the checkpoint and broadcasts
    whether quality improved (and whether that reset the patience), and the other ranks return
    ``valid=None`` and no history. The ranks save only at evaluations: their clocks would not
    agree on a step between two.
    """
    device = next(model.parameters()).device
    group = current(device)
    follower = group is not None and not group.is_main
    t0 = time.perf_counter()
    with _fork_rng(device):
        torch.manual_seed(int_seed(seed, "torch"))
        sched = Schedule.from_train(cfg)
        plan = validation_plan(cfg, dataset.train.nnz)
        st = _Stepper(model, dataset, sched, cfg.batch_users, seed, device, sizes_at, group)
        rule = StopRule(plan.patience, cfg.min_delta)
        best_step, elapsed = 0, 0.0
        best_state: dict[str, torch.Tensor] | None = None
        history: list[dict[str, Any]] = []
        ckpt = Path(checkpoint) if checkpoint is not None else None
        if ckpt is not None and ckpt.is_file():
            state = load_torch(ckpt, map_location=device)
            st.load_state_dict(state["stepper"])
            rule.best_q, rule.bad = state["best_quality"], state["bad"]
            rule.reset_q = state.get("reset_quality", rule.best_q)  # absent: min_delta 0
            best_step = state["best_step"]
            best_state, history = state["best_model"], state["history"]
            elapsed = float(state["seconds"])
            log.info("resumed %s from %s at step %d", desc, ckpt, st.step)
        if group is not None and not group.all_equal(st.step):
            # also a barrier: rank 0 writes no checkpoint before every rank has read it
            raise RunDirError(
                f"the ranks resumed {desc} from different steps (checkpoint {ckpt}); every "
                "rank must see the same run directory and cache"
            )
        best_valid: EvalResult | None = None
        stopped = False
        # between evaluations the state is saved on a clock, on one process only
        save_every = checkpoint_seconds if ckpt is not None and group is None else None
        last_save = time.perf_counter()
        # The bar's total is the step at which training stops if quality never improves again
        # (see earliest_stop): the ETA is to the earliest possible stop, and the total moves
        # out after every improvement. max_steps (100,000 by default) would give a
        # meaningless ETA.
        bar = tqdm(
            total=earliest_stop(cfg, plan, st.step, rule.bad, evaluated=bool(history)),
            initial=st.step,
            desc=desc,
            unit="step",
            disable=not progress,
            leave=False,
        )

        def evaluate_now() -> None:
            nonlocal best_step, best_valid, best_state
            if sizes_at is not None:
                model.set_sizes(None, None)
            if follower and group is not None:
                follow_evaluation(int(group.broadcast_value(0.0)))
                return
            res = validate(model, dataset, "valid", ks, eval_users, eval_batch_users)
            q = res.means["quality"]
            improved, counted = rule.observe(q)
            if improved:
                best_step, best_valid = st.step, res
                best_state = copy.deepcopy(model.state_dict())
            loss = st.mean_loss() if st.step else None  # None: validated before any step
            rec = {
                "step": st.step,
                "loss": loss,
                "lr": st.schedule.lr_at(max(st.step - 1, 0)),
                "valid": res.to_dict()["means"],
                "improved": improved,
                "seconds": elapsed + time.perf_counter() - t0,
            }
            history.append(rec)
            log.info(
                "%s step %d loss %s valid Q %.4f R@20 %.4f%s",
                desc,
                st.step,
                "-" if loss is None else f"{loss:.4f}",
                q,
                res.means.get("recall@20", float("nan")),
                " *" if counted else " +" if improved else "",
            )
            bar.total = earliest_stop(cfg, plan, st.step, rule.bad, evaluated=True)
            bar.set_postfix(
                loss="-" if loss is None else f"{loss:.4f}", best_q=f"{rule.best_q:.4f}"
            )
            if on_eval is not None:
                on_eval(rec)
            save_state()
            if group is not None:  # after the checkpoint: a rank that reads it next sees it
                group.broadcast_value(float(improved) + float(counted))

        def save_state() -> None:
            nonlocal last_save
            if ckpt is not None and not follower:
                save_torch(
                    ckpt,
                    {
                        "stepper": st.state_dict(),
                        "best_quality": rule.best_q,
                        "reset_quality": rule.reset_q,
                        "best_step": best_step,
                        "bad": rule.bad,
                        "best_model": best_state,
                        "history": history,
                        "seconds": elapsed + time.perf_counter() - t0,
                    },
                )
            last_save = time.perf_counter()

        def follow_evaluation(decision: int) -> None:
            """Rank 0's decision (0: no improvement, 1: an improvement within min_delta, 2: one
            that resets the patience) on another rank (the same weights: the same best state)."""
            nonlocal best_step, best_state
            if decision >= 1:
                best_step = st.step
                best_state = copy.deepcopy(model.state_dict())
            rule.follow(decision == 2)
            st.mean_loss()

        try:
            if validate_first and st.step == 0 and not history:
                evaluate_now()  # a warm start is a candidate too: never return worse than it
            while st.step < cfg.max_steps and not rule.stop:
                # validations fall on multiples of the interval (a resumed run may be
                # between two) and at max_steps
                window_end = (st.step // plan.every + 1) * plan.every
                window_end = min(window_end, cfg.max_steps)
                while st.step < window_end:
                    until = None if save_every is None else last_save + save_every
                    st.run(window_end - st.step, bar, until)
                    if st.step < window_end:
                        save_state()
                        log.debug("%s: saved the training state at step %d", desc, st.step)
                evaluate_now()
            stopped = rule.stop
        finally:
            bar.close()
        if best_state is not None:
            model.load_state_dict(best_state)
        if best_valid is None and best_state is not None and not follower:
            # resumed after the best evaluation: recompute it from the restored weights
            best_valid = validate(model, dataset, "valid", ks, eval_users, eval_batch_users)
    return FitResult(
        valid=best_valid,
        best_step=best_step,
        steps=st.step,
        stopped_early=stopped,
        seconds=elapsed + time.perf_counter() - t0,
        history=history,
    )


def finetune(
    model: Backbone,
    dataset: Dataset,
    *,
    steps: int,
    schedule: Schedule,
    batch_users: int,
    seed: int,
    progress: bool = False,
    desc: str = "finetune",
) -> float:
    """Fine-tune every parameter for a fixed number of BPR steps with a fresh Adam (a probe,
    bet.md §6). Returns the mean loss of the run."""
    device = next(model.parameters()).device
    with _fork_rng(device):
        torch.manual_seed(int_seed(seed, "torch"))
        st = _Stepper(model, dataset, schedule, batch_users, seed, device)
        bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False)
        try:
            st.run(steps, bar)
        finally:
            bar.close()
        return st.mean_loss()
