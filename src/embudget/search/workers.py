"""Ray for the search and the grid: the connection (:func:`ray_workers`) and the probes it runs.

Ray is imported only inside these functions, so ``import embudget`` works without it;
:func:`import_ray` turns its absence into :class:`RayUnavailableError` (``pip install
'embudget[ray]'``). :class:`RayProbes` starts one actor per worker for a search: the searcher is
copied without its predictor and Θ0 is put into the object store once, on its own; each probe
sends only the action and its index. :class:`LocalProbes` runs the same probes here, one at a
time, when no workers are given.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch

from embudget.errors import ConfigError, EmbudgetError
from embudget.search.actions import Action
from embudget.search.loop import ActionSearcher

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'embudget[ray]'"
ProbeResult = tuple[float, float, float, float]


class RayUnavailableError(ConfigError):
    """Workers were asked for (``--workers``, ``--ray-address``) but Ray is not installed."""


def import_ray() -> Any:
    """The ``ray`` module; :class:`RayUnavailableError` when it is not installed."""
    try:
        import ray
    except ImportError as e:
        raise RayUnavailableError(
            f"--workers and --ray-address need Ray, which is not installed: {INSTALL_HINT}"
        ) from e
    return ray


@dataclass(frozen=True)
class RayPool:
    """The Ray connection searches and grids use: ``workers`` probes or cells at once, on a
    cluster of ``cpus`` CPUs."""

    workers: int
    cpus: int


_POOL: ContextVar[RayPool | None] = ContextVar("embudget_ray_pool", default=None)


def active_pool() -> RayPool | None:
    """The pool of the enclosing :func:`ray_workers`, or None (everything runs here)."""
    return _POOL.get()


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """``values`` set in the environment (unless already set) for the block."""
    added = [k for k in values if k not in os.environ]
    for k in added:
        os.environ[k] = values[k]
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


@contextlib.contextmanager
def ray_workers(workers: int | None = None, address: str | None = None) -> Iterator[RayPool]:
    """Run the searches and grids of the block on Ray.

    Args:
        workers: probes (or grid cells) at once; without ``address`` a local Ray is started
            with this many CPUs. None with an address: one per CPU of the cluster.
        address: a running cluster (``ray://host:10001``, ``host:6379`` or ``auto``).

    A Ray already initialised in this process is used as it is and left running. A local Ray
    keeps its files in a new temporary directory, removed afterwards, and runs without
    token authentication or usage reporting (unless the environment sets them).

    Raises:
        RayUnavailableError: Ray is not installed.
        ConfigError: neither ``workers`` nor ``address``, or ``workers`` < 1.
    """
    if workers is None and address is None:
        raise ConfigError("ray_workers needs workers (a local Ray) or an address (a cluster)")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    ray = import_ray()
    started, tmp = False, None
    try:
        if not ray.is_initialized():
            options: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
            if address is None:
                tmp = tempfile.mkdtemp(prefix="embudget-ray-")
                options.update(num_cpus=workers, _temp_dir=tmp, include_dashboard=False)
            else:
                options["address"] = address
            with _environ(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0"):
                ray.init(**options)
            started = True
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        pool = RayPool(workers if workers is not None else cpus, cpus)
        log.info("ray: %d workers on %d CPUs", pool.workers, pool.cpus)
        token = _POOL.set(pool)
        try:
            yield pool
        finally:
            _POOL.reset(token)
    finally:
        if started:
            ray.shutdown()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


class _ProbeActor:
    """One Ray worker: a copy of the searcher (without predictor) that probes actions."""

    def __init__(self, searcher: ActionSearcher, theta0: Any, threads: int) -> None:
        torch.set_num_threads(threads)
        if theta0 is not None:
            searcher.theta0 = theta0  # type: ignore[attr-defined]
        self.searcher = searcher

    def probe(self, action: Action, t: int) -> ProbeResult:
        return self.searcher.probe(action, t)


class LocalProbes:
    """Probes run here, one at a time, when asked for their result."""

    workers = 1

    def __init__(self, searcher: ActionSearcher) -> None:
        self.searcher = searcher
        self.pending: dict[int, Action] = {}

    def submit(self, t: int, action: Action) -> None:
        self.pending[t] = action

    def busy_from(self, t: int) -> int:
        return 0

    def result(self, t: int) -> ProbeResult:
        return self.searcher.probe(self.pending.pop(t), t)

    def close(self) -> None:
        self.pending.clear()


class RayProbes:
    """Probes on ``pool.workers`` actors; a probe waits in a queue while every actor is busy."""

    def __init__(self, searcher: ActionSearcher, pool: RayPool) -> None:
        self.ray = ray = import_ray()
        shipped = copy.copy(searcher)
        shipped.predictor, shipped.trainer = None, None
        theta0 = getattr(searcher, "theta0", None)
        if theta0 is not None:
            shipped.theta0 = None  # type: ignore[attr-defined]  # sent once, on its own
        threads = torch.get_num_threads()
        model = getattr(searcher, "model", None)
        gpus = 0
        if isinstance(model, torch.nn.Module):
            first = next(model.parameters(), None)
            gpus = 1 if first is not None and first.device.type == "cuda" else 0
        try:
            searcher_ref = ray.put(shipped)
        except Exception as e:  # cloudpickle raises many types
            raise EmbudgetError(
                f"the searcher cannot be sent to Ray workers ({type(e).__name__}: {e}); "
                "run without --workers"
            ) from e
        theta0_ref = None if theta0 is None else ray.put(theta0)
        actor = ray.remote(_ProbeActor).options(num_cpus=min(threads, pool.cpus), num_gpus=gpus)
        self.workers = pool.workers
        self.actors = [actor.remote(searcher_ref, theta0_ref, threads) for _ in range(self.workers)]
        self.idle = list(self.actors)
        self.running: dict[Any, tuple[int, Any]] = {}
        self.queue: deque[tuple[int, Action]] = deque()
        self.done: dict[int, ProbeResult] = {}

    def submit(self, t: int, action: Action) -> None:
        self.queue.append((t, action))
        self._dispatch()

    def busy_from(self, t: int) -> int:
        """Probes from index ``t`` on that are running or waiting."""
        running = sum(1 for t_run, _ in self.running.values() if t_run >= t)
        return running + sum(1 for t_wait, _ in self.queue if t_wait >= t)

    def _dispatch(self) -> None:
        while self.queue and self.idle:
            t, action = self.queue.popleft()
            worker = self.idle.pop(0)
            self.running[worker.probe.remote(action, t)] = (t, worker)

    def result(self, t: int) -> ProbeResult:
        while t not in self.done:
            if not self.running:
                raise EmbudgetError(f"probe {t} was never submitted")
            ready, _ = self.ray.wait(list(self.running), num_returns=1)
            for ref in ready:
                t_done, worker = self.running.pop(ref)
                self.idle.append(worker)
                try:
                    self.done[t_done] = self.ray.get(ref)
                except self.ray.exceptions.RayTaskError as e:  # the probe's own error
                    raise (e.cause if isinstance(e.cause, BaseException) else e) from None
            self._dispatch()
        return self.done.pop(t)

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors, self.idle = [], []
        self.running.clear()
