"""Training and measuring a user's own model (:func:`embudget.search_sizes`).

The user brings the batches, a loss ``loss(model, batch) -> Tensor`` and an evaluation
``evaluate(model) -> float`` (higher is better). :func:`train_steps` runs a fixed number of Adam
steps over those batches (bet.md §6's fine-tune with a fresh optimiser, and §7.2's training
with the best validated weights kept when ``eval_every`` is set); :func:`measure` calls the
evaluation in eval mode without gradients and checks its answer.

Every run draws its global torch randomness (dropout, a shuffling ``DataLoader``) from its own
named stream inside a forked RNG, so a search is a function of its seed and never disturbs
the caller's random state.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from embudget.errors import ConfigError
from embudget.seeds import int_seed
from embudget.training.adam import FusedAdam

__all__ = ["Batches", "EvaluateFn", "LossFn", "TrainOutcome", "measure", "seeded", "train_steps"]

#: Training batches: an iterable (re-iterated from the start whenever it ends: a list, a
#: ``DataLoader``), a function returning a fresh iterable (called again whenever one ends), or a
#: one-shot iterator (a generator; it must not run out).
Batches = Iterable[Any] | Callable[[], Iterable[Any]]
#: ``loss(model, batch)``: a scalar tensor to minimise, with a gradient.
LossFn = Callable[[nn.Module, Any], torch.Tensor]
#: ``evaluate(model)``: the validation quality, higher is better, finite.
EvaluateFn = Callable[[nn.Module], float]


def _devices(model: nn.Module) -> list[torch.device]:
    return sorted(
        {p.device for p in model.parameters() if p.device.type == "cuda"}, key=lambda d: str(d)
    )


@contextlib.contextmanager
def seeded(model: nn.Module | None, seed: int, *stream: str | int) -> Iterator[None]:
    """Torch's global generators seeded from the named stream, restored afterwards."""
    devices = [] if model is None else _devices(model)
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int_seed(seed, *stream))
        yield


class _Stream:
    """Endless batches from a :data:`Batches`: a new pass starts whenever one ends."""

    def __init__(self, batches: Batches) -> None:
        self.source = batches
        self.it: Iterator[Any] | None = None

    def _fresh(self) -> Iterator[Any]:
        src = self.source
        if callable(src) and not isinstance(src, Iterable):
            src = src()
        if not isinstance(src, Iterable):
            raise ConfigError(
                f"batches must be an iterable of batches or a function returning one, got "
                f"{type(src).__name__}"
            )
        return iter(src)

    def next(self) -> Any:
        for _ in range(2):
            if self.it is None:
                self.it = self._fresh()
            try:
                return next(self.it)
            except StopIteration:
                self.it = None
        raise ConfigError(
            "the training batches ran out (or are empty): pass an iterable that can be iterated "
            "again (a list, a DataLoader) or a function returning a fresh iterable, not a "
            "one-shot iterator"
        )


@dataclass(frozen=True)
class TrainOutcome:
    """What a training run did: steps, mean loss, the kept model's quality (when evaluated)
    and its step, and the seconds it took."""

    steps: int
    mean_loss: float
    quality: float | None
    best_step: int
    seconds: float


def measure(model: nn.Module, evaluate: EvaluateFn) -> float:
    """``evaluate(model)`` in eval mode without gradients; the model's mode is restored.

    Raises:
        ConfigError: the evaluation returned something other than a finite number.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            q = evaluate(model)
    finally:
        model.train(was_training)
    if isinstance(q, torch.Tensor) and q.numel() == 1:
        q = q.item()
    if isinstance(q, bool) or not isinstance(q, int | float) or not math.isfinite(float(q)):
        raise ConfigError(f"evaluate(model) must return a finite number, got {q!r}")
    return float(q)


def _loss(loss: LossFn, model: nn.Module, batch: Any) -> torch.Tensor:
    out = loss(model, batch)
    if not isinstance(out, torch.Tensor) or out.numel() != 1 or not out.requires_grad:
        raise ConfigError(
            "loss(model, batch) must return a scalar tensor computed from the model's "
            f"parameters (with a gradient), got {type(out).__name__}"
            + (f" of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else "")
        )
    return out.reshape(())


def train_steps(
    model: nn.Module,
    batches: Batches,
    loss: LossFn,
    *,
    steps: int,
    lr: float,
    seed: int,
    stream: str,
    evaluate: EvaluateFn | None = None,
    eval_every: int = 0,
) -> TrainOutcome:
    """``steps`` Adam steps on ``loss`` over ``batches`` with a fresh optimiser.

    With ``evaluate`` and ``eval_every`` > 0 the model is validated every ``eval_every`` steps
    and at the end, and the best weights (strictly better, the earliest on a tie) are restored.

    Build the optimiser only after the sizes are set: :meth:`BudgetedEmbedding.set_sizes`
    replaces its ``values`` parameter.

    Raises:
        ConfigError: a loss that is not a scalar with a gradient, or that became NaN or inf.
    """
    t0 = time.perf_counter()
    params = [p for p in model.parameters() if p.requires_grad]
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    total = torch.zeros(())
    with seeded(model, seed, stream, "torch"):
        opt = FusedAdam(params, lr=lr) if params else None
        data = _Stream(batches)
        model.train()
        for step in range(1, steps + 1):
            value = _loss(loss, model, data.next())
            if opt is not None:
                opt.zero_grad()
                value.backward()
                opt.step()
            total += value.detach().cpu()
            if evaluate is not None and eval_every > 0 and (step % eval_every == 0):
                q = measure(model, evaluate)
                if best is None or q > best[0]:
                    best = (q, step, _copy_state(model))
        mean = float(total) / max(1, steps)
        if steps and not math.isfinite(mean):
            raise ConfigError(
                f"the loss became {mean} while training ({stream}); lower the learning rate"
            )
        quality: float | None = None
        best_step = steps
        if evaluate is not None and eval_every > 0:
            if steps % eval_every or best is None:
                q = measure(model, evaluate)
                if best is None or q > best[0]:
                    best = (q, steps, _copy_state(model))
            quality, best_step, state = best
            if best_step != steps:
                model.load_state_dict(state)
    return TrainOutcome(steps, mean, quality, best_step, time.perf_counter() - t0)


def _copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
