"""From a resolved config to a finished run directory (bet.md §5–§7, §9, §14.5–14.6).

:func:`run` drives both kinds of run through the same stages and returns a
:class:`~embudget.result.RunResult` (also written as ``results.json``):

- ``train``: a full-size backbone trained to convergence, tested;
- ``search``: the method's :class:`~embudget.search.proposers.Proposer` proposes size
  assignments (after the pretrained full-size model Θ0 when it needs one, cached by config
  hash), each is retrained (:mod:`embudget.pipeline.retrain`: from scratch, or from Θ0's
  prefixes in fast mode), the best on validation is kept and tested once; ``full`` keeps Θ0
  itself, unbudgeted.

Every stage resumes: Θ0 from its cache, the search from its saved state, retraining from its
log, training from its checkpoint.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, TypedDict, Unpack

import numpy as np
import torch

from embudget import __version__
from embudget.budget.core import check_budget
from embudget.budget.usage import Usage
from embudget.config import RunConfig
from embudget.data.dataset import Dataset
from embudget.errors import RunDirError
from embudget.io import RunDir, append_jsonl, file_lock, resolve_device, write_text
from embudget.pipeline.build import (
    PRETRAIN_STREAM,
    evaluate_model,
    fit_model,
    load_data,
    make_model,
    resolve_budget,
    tables_per_entity,
)
from embudget.pipeline.pretrain import pretrain
from embudget.pipeline.retrain import retrain
from embudget.pipeline.rundir import (
    metrics_of,
    model_sizes,
    open_run,
    save_final,
    start_run,
)
from embudget.result import RESULTS_FILE, Chosen, Kind, RunResult, Timing, Training
from embudget.search.actions import RankAssignment
from embudget.search.loop import STATE_FILE
from embudget.search.proposers import Candidate, Proposal, ProposalContext, proposer_for
from embudget.tables.compact import is_compact
from embudget.training import distributed
from embudget.training.distributed import Group
from embudget.training.fit import warn_if_coarse_validation
from embudget.training.threads import apply_run_threads

log = logging.getLogger(__name__)

__all__ = ["RunOptions", "run", "run_search", "run_train"]


def run(
    cfg: RunConfig,
    out: str | Path,
    *,
    kind: Kind = "search",
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> RunResult:
    """Run ``kind`` (``train`` or ``search``) into the run directory ``out``.

    Args:
        overwrite: replace an existing run in ``out``.
        resume: continue the run in ``out`` (a finished one is returned as it is).
        progress: show progress bars.

    Raises:
        RunDirError: ``out`` holds files (without ``overwrite``/``resume``), or another run,
            or another process is running in it.
        BudgetError: the budget cannot be met (INFEASIBLE), before any training.

    Under ``torchrun --nproc_per_node=P`` (P > 1) every process runs this with the same
    arguments: all train (:mod:`embudget.training.distributed`), rank 0 alone searches, writes
    and keeps the run's lock, and the others return the ``results.json`` it wrote.
    """
    if kind == "search":
        proposer_for(cfg.search.method)  # an unknown method fails before the directory is made
    group = _join(cfg)
    if group is not None and not group.is_main:
        return _follow(cfg, Path(out), kind, resume, group)
    try:
        rundir, finished = open_run(cfg, out, overwrite, resume, kind)
    except BaseException:
        _tell(group, _FAILED)
        raise
    if finished is not None:
        _tell(group, _FINISHED)
        return finished
    # held while the run lasts: another run into this directory is refused (open_run), and
    # the operating system drops it however this process ends
    with file_lock(rundir.file("run.log"), wait=False) as mine:
        _tell(group, _OPENED if mine else _FAILED)
        if not mine:
            raise RunDirError(f"{rundir.path} is in use by another running embudget process")
        handler = rundir.attach_log()
        try:
            if kind == "train":
                result = _train(cfg, rundir, resume, progress, group)
            else:
                result = _search(cfg, rundir, resume, progress, group)
        except BaseException as e:  # for the run's log (the caller reports the error itself)
            log.info("run stopped by %s: %s", type(e).__name__, e)
            raise
        finally:
            RunDir.detach_log(handler)
    assert result is not None
    if group is not None:
        group.barrier()  # results.json is written: the other ranks read it
    return result


#: what rank 0 tells the other ranks about the run directory
_FAILED, _FINISHED, _OPENED = -1.0, 1.0, 2.0


def _join(cfg: RunConfig) -> Group | None:
    """The process group under torchrun with P > 1 (joined here), else None."""
    if distributed.world_size() <= 1:
        return None
    return distributed.current(distributed.local_device(resolve_device(cfg.device)))


def _tell(group: Group | None, state: float) -> None:
    if group is not None:
        group.broadcast_value(state)


def _follow(cfg: RunConfig, out: Path, kind: Kind, resume: bool, group: Group) -> RunResult:
    """:func:`run` on a rank other than 0: train beside rank 0, then read its result."""
    state = group.broadcast_value(0.0)
    if state == _FAILED:
        raise RunDirError(f"rank 0 could not run in {out}; its error says why")
    if state == _OPENED:
        if kind == "train":
            _train(cfg, RunDir(out), resume, False, group)
        else:
            _search(cfg, RunDir(out), resume, False, group)
        group.barrier()
    return RunResult.read(out / RESULTS_FILE)


def _start(cfg: RunConfig, rundir: RunDir, dataset: Dataset, main: bool) -> torch.device:
    """``start_run`` (runtime settings; writes the config and environment) on rank 0; the
    same settings, writing nothing, on the others."""
    if main:
        device = start_run(cfg, rundir, dataset)
    else:
        apply_run_threads(cfg, dataset)
        device = resolve_device(cfg.device)
    return distributed.local_device(device)


def _shared(group: Group, candidates: tuple[Candidate, ...]) -> tuple[Candidate, ...]:
    """Rank 0's candidates on every rank (the other ranks search nothing)."""
    arrays = [
        a
        for c in candidates
        for a in (np.frombuffer(c.name.encode(), np.uint8), c.user_sizes, c.item_sizes)
    ]
    got = group.broadcast_arrays(arrays if group.is_main else None)
    if group.is_main:
        return candidates
    return tuple(
        Candidate(got[i].astype(np.uint8).tobytes().decode(), got[i + 1], got[i + 2])
        for i in range(0, len(got), 3)
    )


class RunOptions(TypedDict, total=False):
    """The keyword options of :func:`run_search` and :func:`run_train` (see :func:`run`)."""

    overwrite: bool
    resume: bool
    progress: bool


def run_search(cfg: RunConfig, out: str | Path, **options: Unpack[RunOptions]) -> RunResult:
    """One method at one budget (``embudget search``): :func:`run` with ``kind="search"``."""
    return run(cfg, out, kind="search", **options)


def run_train(cfg: RunConfig, out: str | Path, **options: Unpack[RunOptions]) -> RunResult:
    """A full-size backbone (``embudget train``): :func:`run` with ``kind="train"``."""
    return run(cfg, out, kind="train", **options)


def _identity(cfg: RunConfig, dataset: Dataset, device: torch.device) -> dict[str, Any]:
    """The fields every result starts with: what ran, on what data, where."""
    return {
        "dataset": dataset.name,
        "protocol": dataset.protocol,
        "split_fingerprint": dataset.fingerprint(),
        "backbone": cfg.model.name,
        "seed": cfg.seed,
        "config_hash": cfg.hash(),
        "embudget_version": __version__,
        "torch_version": str(torch.__version__),
        "device": str(device),
    }


def _search(
    cfg: RunConfig, rundir: RunDir, resume: bool, progress: bool, group: Group | None = None
) -> RunResult | None:
    main = group is None or group.is_main
    proposer = proposer_for(cfg.search.method)
    t_start = time.perf_counter()
    dataset = load_data(cfg)
    t_data = time.perf_counter() - t_start
    device = _start(cfg, rundir, dataset, main)
    budget = resolve_budget(cfg, dataset)
    if proposer.budgeted:  # fail before any training, with the ways out
        budget.check_feasible()
    log.info(
        "%s on %s/%s: budget %d parameters (%d per entity table)",
        proposer.method,
        dataset.name,
        cfg.model.name,
        budget.params,
        budget.per_entity,
    )
    if main:
        warn_if_coarse_validation(cfg.train, dataset)
    warm = cfg.search.retrain.init == "shared"
    needs_theta0 = proposer.needs_theta0 or (warm and proposer.budgeted)
    theta0 = pretrain(cfg, dataset, device, progress) if needs_theta0 else None
    ctx = ProposalContext(
        cfg=cfg,
        dataset=dataset,
        budget=budget,
        assignment=RankAssignment(dataset.user_freq, dataset.item_freq),
        theta0=None if theta0 is None else theta0.state,
        new_model=lambda stream: make_model(cfg, dataset, device, stream),
        run=rundir,
        resume=resume,
        progress=progress,
    )
    proposal: Proposal | None = proposer.propose(ctx) if main else None  # rank 0 searches
    candidates = () if proposal is None else proposal.candidates
    if group is not None and proposer.budgeted:
        candidates = _shared(group, candidates)

    retrain_seconds = 0.0
    training: Training | None = None  # how the kept model's fit ended
    if proposer.budgeted:
        init = theta0.state if warm and theta0 is not None else None
        r = retrain(
            cfg,
            dataset,
            device,
            rundir,
            candidates,
            budget.per_entity,
            resume,
            progress,
            init,
        )
        if r is None:  # another rank than 0: rank 0 finishes the run
            return None
        model, valid, chosen, retrain_seconds = r.model, r.valid, r.chosen, r.seconds
        training = r.training
    else:  # Θ0 itself: the unbudgeted reference
        if not main:
            return None
        assert theta0 is not None
        model = make_model(cfg, dataset, device, PRETRAIN_STREAM)
        model.load_state_dict(theta0.state)
        valid = evaluate_model(cfg, model, dataset, "valid")
        chosen = Chosen(proposer.method)
        training = theta0.training
    assert proposal is not None
    us, vs = model_sizes(model)
    if proposer.budgeted:
        check_budget(us, vs, budget.per_entity, cfg.model.d_max)
    test = evaluate_model(cfg, model, dataset, "test")

    usage = Usage.of_sizes(
        us,
        vs,
        dense_params=model.dense_params(),
        budget=budget if proposer.budgeted else budget.unbudgeted(),
    )
    save_final(rundir, model, valid, test, (us, vs, dataset))
    result = RunResult(
        kind="search",
        method=proposer.method,
        **_identity(cfg, dataset, device),
        sparsity=cfg.budget.sparsity,
        kept_fraction=cfg.budget.kept_fraction,
        budgeted=proposer.budgeted,
        usage=usage,
        storage="compact" if is_compact(model) else "masked",
        valid=metrics_of(valid),
        test=metrics_of(test),
        timing=Timing.measured(
            t_start,
            data=t_data,
            pretrain=0.0 if theta0 is None or theta0.cached else theta0.seconds,
            search=proposal.seconds,
            retrain=retrain_seconds,
        ),
        training=training,
        chosen=chosen,
        theta0_valid=None if theta0 is None else theta0.valid,
        theta0_training=None if theta0 is None else theta0.training,
        n_probes=proposal.n_probes,
    )
    result.write(rundir.file(RESULTS_FILE))
    rundir.file(STATE_FILE).unlink(missing_ok=True)
    return result


def _train(
    cfg: RunConfig, rundir: RunDir, resume: bool, progress: bool, group: Group | None = None
) -> RunResult | None:
    main = group is None or group.is_main
    t_start = time.perf_counter()
    ds = load_data(cfg)
    t_data = time.perf_counter() - t_start
    device = _start(cfg, rundir, ds, main)
    log.info("data %s: %s (%.1fs)", ds.name, ds.stats(), t_data)
    if main:
        warn_if_coarse_validation(cfg.train, ds)
    # The same streams as the search's pretraining, so `train` and `search --method full`
    # produce the same model for the same config and seed.
    model = make_model(cfg, ds, device, PRETRAIN_STREAM)
    metrics_path = rundir.file("metrics.jsonl")
    if main and not resume and metrics_path.exists():
        metrics_path.unlink()
    fr = fit_model(
        cfg,
        model,
        ds,
        PRETRAIN_STREAM,
        checkpoint=rundir.file("checkpoint.pt"),
        progress=progress,
        on_eval=lambda rec: append_jsonl(metrics_path, rec),
        desc=f"train {cfg.model.name}",
    )
    if not main:
        return None  # rank 0 evaluates and writes
    assert fr.valid is not None
    # The appends above stream progress; a kill between an append and the checkpoint can
    # repeat a line on resume, so the final file is rewritten from the fit's history.
    write_text(metrics_path, "".join(json.dumps(rec) + "\n" for rec in fr.history))
    test = evaluate_model(cfg, model, ds, "test")
    save_final(rundir, model, fr.valid, test)
    us, vs = model_sizes(model)
    b = cfg.budget
    usage = Usage.of_sizes(
        us,
        vs,
        d_max=cfg.model.d_max,
        tables=tables_per_entity(cfg),
        dtype=b.dtype,
        layout=b.layout,
        dense_params=model.dense_params(),
    )
    result = RunResult(
        kind="train",
        method=None,
        **_identity(cfg, ds, device),
        sparsity=None,
        kept_fraction=None,
        budgeted=False,
        usage=usage,
        storage="compact" if is_compact(model) else "masked",
        valid=metrics_of(fr.valid),
        test=metrics_of(test),
        timing=Timing.measured(t_start, data=t_data, train=fr.seconds),
        training=fr.training(),
    )
    result.write(rundir.file(RESULTS_FILE))
    rundir.file("checkpoint.pt").unlink(missing_ok=True)
    return result
