"""What a probe of the search measures (bet.md §6): how many fine-tuning steps it runs and on
which validation users its fitness is scored, including fast LightGCN's rule for small data."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from embudget.config import RunConfig
from embudget.data.dataset import Dataset
from embudget.training.fit import validation_users

log = logging.getLogger(__name__)

#: Fewer fitness users than this misled the fast search on ML-100K and Last.fm (RESULTS.md, "A
#: default that holds on other data"); a search whose probes score fewer (without the
#: small-data rule of :func:`probe_plan`) says what was measured on small data for its backbone.
NOISY_FITNESS_USERS = 2000


def probe_steps(cfg: RunConfig, dataset: Dataset) -> int:
    """Fine-tuning steps of one probe: ``search.probe.steps``, else h epochs of BPR steps (h = 10,
    15 for NGCF, bet.md Appendix A)."""
    s = cfg.search
    if s.probe.steps is not None:
        return s.probe.steps
    epochs = s.probe.epochs
    if epochs is None:
        epochs = 15 if cfg.model.name == "ngcf" else 10
    return epochs * math.ceil(dataset.train.nnz / cfg.train.batch_users)


@dataclass(frozen=True)
class ProbePlan:
    """How every probe of a search measures fitness.

    Attributes:
        steps: fine-tuning steps of one probe (0: score the truncated Θ0).
        users: the validation users the fitness and Q0 score (sorted).
    """

    steps: int
    users: np.ndarray


def probe_plan(cfg: RunConfig, dataset: Dataset) -> ProbePlan:
    """The probe's steps and fitness users: :func:`probe_steps` on ``user_fraction``'s fixed
    sample, unless that sample holds fewer than ``search.probe.small_data_users`` users. Then
    the fitness scores every validation user and a probe runs ``small_data_steps`` steps (when
    set): on ML-100K and Last.fm a quarter of the users (236 and 470) made the fast search
    prefer tables skewed by popularity, and 50-step probes on every user matched the faithful
    search end to end (RESULTS.md, "A default that holds on other data")."""
    p = cfg.search.probe
    users = validation_users(dataset, p.user_fraction, cfg.seed, "fitness-users")
    if p.user_fraction < 1.0 and users.size < p.small_data_users:
        every = validation_users(dataset, 1.0, cfg.seed, "fitness-users")
        steps = probe_steps(cfg, dataset) if p.small_data_steps is None else p.small_data_steps
        log.info(
            "small data: %d validation users in the fitness sample (under "
            "search.probe.small_data_users=%d); the probes score all %d and run %d steps",
            users.size,
            p.small_data_users,
            every.size,
            steps,
        )
        return ProbePlan(steps, every)
    if p.user_fraction < 1.0 and users.size < NOISY_FITNESS_USERS:
        log.warning(
            "the probes score tables on %d validation users (search.probe.user_fraction=%g), a "
            "noisy sample; %s",
            users.size,
            p.user_fraction,
            _small_data_advice(cfg),
        )
    return ProbePlan(probe_steps(cfg, dataset), users)


def _small_data_advice(cfg: RunConfig) -> str:
    """What was measured on small data for this backbone (RESULTS.md), and nothing more."""
    if cfg.model.name in ("lightgcn", "ngcf"):
        return (
            "on small data, probes on every user matched the faithful search: --set "
            f"search.probe.small_data_users={NOISY_FITNESS_USERS} --set "
            "search.probe.small_data_steps=50"
        )
    if cfg.model.name == "mf":
        # scoring every user helped MF on ML-100K and hurt it on Last.fm; validated at most 40
        # epochs apart, SU caught up on ML-100K: there is no rule to point to
        return (
            "on small data MF's search lost to SU on Last.fm and was level with it on ML-100K "
            "once models were validated at most 40 epochs apart: run SU beside it (--methods "
            "su,bet)"
        )
    return (
        f"not measured for {cfg.model.name} on small data; --set "
        "search.probe.user_fraction=1.0 scores every user"
    )
