"""Θ0: the full-size backbone trained to convergence, cached by what it depends on
(bet.md §5.1; nested pretraining trains every prefix, §14.5)."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from embudget.config import HASH_FORMAT, RunConfig
from embudget.data.dataset import Dataset
from embudget.errors import DamagedFileError, ResultError
from embudget.io import file_lock, load_torch, read_json, save_torch, write_json
from embudget.pipeline.build import PRETRAIN_STREAM, fit_model, make_model
from embudget.result import Training
from embudget.search.actions import RankAssignment
from embudget.search.nested import NestedSizes
from embudget.seeds import int_seed
from embudget.training.distributed import Group, current

log = logging.getLogger(__name__)


def pretrain_key(cfg: RunConfig, dataset: Dataset) -> str:
    """Hash of what Θ0 depends on: the split's fingerprint, the data, backbone and training
    settings that differ from the defaults (so a setting added later with a default leaves
    every cached Θ0 valid), the cut-offs, the seed and nested pretraining's settings."""
    blob = json.dumps(
        {
            "format": HASH_FORMAT,
            "fingerprint": dataset.fingerprint(),
            "changes": cfg.changes(("data", "model", "train")),
            "ks": list(cfg.eval.ks),
            "seed": cfg.seed,
            **_nested_key(cfg),
        },
        sort_keys=True,
    ).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def _nested_key(cfg: RunConfig) -> dict[str, Any]:
    """Nested pretraining's settings (absent for standard Θ0, so its cache keys stay valid)."""
    s = cfg.search
    if s.pretrain.mode != "nested":
        return {}
    return {"nested": {"kept_min": s.pretrain.nested_kept_min, "size_step": s.sampler.size_step}}


def nested_sizes(cfg: RunConfig, dataset: Dataset) -> NestedSizes | None:
    """The per-step truncations of nested pretraining, or None for standard Θ0."""
    if cfg.search.pretrain.mode != "nested":
        return None
    return NestedSizes(
        RankAssignment(dataset.user_freq, dataset.item_freq),
        cfg.model.d_max,
        cfg.search.pretrain.nested_kept_min,
        int_seed(cfg.seed, PRETRAIN_STREAM),
        cfg.search.sampler.size_step,
    )


@dataclass
class Pretrained:
    """Θ0's weights, its validation means, the seconds its training took, whether it was
    loaded from the cache (then no training time was spent in this run), and how its fit
    ended (None for cache entries written before that was kept)."""

    state: dict[str, torch.Tensor]
    valid: dict[str, float]
    seconds: float
    cached: bool
    training: Training | None = None


def pretrain(
    cfg: RunConfig, dataset: Dataset, device: torch.device, progress: bool = False
) -> Pretrained:
    """Θ0: the full-size backbone trained to convergence (every prefix trained, when nested),
    loaded from the cache when present. Under torchrun (P > 1) every rank trains and rank 0
    alone writes the cache; the others then read it."""
    cache = Path(cfg.cache_dir)
    key = pretrain_key(cfg, dataset)
    path = cache / f"pretrain-{cfg.model.name}-{key}.pt"
    group = current(device)
    if group is not None and not group.is_main:
        return _follow_pretrain(cfg, dataset, device, path, key, group)
    cache.mkdir(parents=True, exist_ok=True)
    # one process trains a given Θ0; another that needs it (a second `bench` sharing the
    # cache) waits for it and loads the result, instead of training it again beside it
    lock = path.with_suffix(".lock")
    with file_lock(lock, wait=False) as free:
        if not free:
            log.info("another process is pretraining %s; waiting for it", path.name)
    with file_lock(lock):
        return _load_or_pretrain(cfg, dataset, device, path, key, progress, group)


def _follow_pretrain(
    cfg: RunConfig, dataset: Dataset, device: torch.device, path: Path, key: str, group: Group
) -> Pretrained:
    """Θ0 on a rank other than 0: train it beside rank 0 unless rank 0 found it cached, then
    read what rank 0 wrote."""
    if not group.broadcast_value(0.0):
        model = make_model(cfg, dataset, device, PRETRAIN_STREAM)
        fit_model(
            cfg,
            model,
            dataset,
            PRETRAIN_STREAM,
            checkpoint=path.with_suffix(".ckpt.pt"),
            progress=False,
            desc=f"pretrain {cfg.model.name}",
            sizes_at=nested_sizes(cfg, dataset),
        )
        group.barrier()  # rank 0 has written the cache entry
    pre = _load_cached(path, key, device)
    if pre is None:
        raise DamagedFileError(
            path, "rank 0's Θ0 cannot be read here", "every rank must see the same cache_dir"
        )
    return pre


def checksum_path(path: Path) -> Path:
    """The JSON file beside a cached Θ0 holding its SHA-256; written after the weights, so an
    entry without a valid one is incomplete and treated as absent."""
    return path.with_suffix(".sha256.json")


def _load_cached(path: Path, key: str, device: torch.device) -> Pretrained | None:
    """The cached Θ0, or None when there is none or it is damaged (then it is rebuilt)."""
    if not path.is_file():
        return None
    side = checksum_path(path)
    try:
        meta = read_json(side) if side.is_file() else None
    except DamagedFileError:
        meta = None
    if not (isinstance(meta, dict) and isinstance(meta.get("sha256"), str)):
        log.warning("cached Θ0 %s has no valid checksum (%s); training it again", path, side.name)
        return None
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != meta["sha256"]:
        log.warning("cached Θ0 %s is damaged (its checksum differs); training it again", path)
        return None
    try:
        blob = load_torch(path, map_location=device, data=data)
        fit = blob.get("training")
        training = None if fit is None else Training.from_dict(fit, str(path))
        pre = Pretrained(
            dict(blob["model"]), dict(blob["valid"]), float(blob["seconds"]), True, training
        )
        if blob["key"] != key:
            raise ValueError(f"stored under key {blob['key']!r}, not {key!r}")
    except (DamagedFileError, ResultError, KeyError, TypeError, ValueError) as e:
        log.warning("cached Θ0 %s cannot be used (%s); training it again", path, e)
        return None
    log.info("pretrained model from cache %s", path)
    return pre


def _load_or_pretrain(
    cfg: RunConfig,
    dataset: Dataset,
    device: torch.device,
    path: Path,
    key: str,
    progress: bool,
    group: Group | None = None,
) -> Pretrained:
    cached = _load_cached(path, key, device)
    if group is not None:  # the other ranks train beside this one unless it is cached
        group.broadcast_value(float(cached is not None))
    if cached is not None:
        return cached
    checksum_path(path).unlink(missing_ok=True)  # a rebuilt entry is valid only when complete
    checkpoint = path.with_suffix(".ckpt.pt")
    model = make_model(cfg, dataset, device, PRETRAIN_STREAM)
    try:
        fr = fit_model(
            cfg,
            model,
            dataset,
            PRETRAIN_STREAM,
            checkpoint=checkpoint,
            progress=progress,
            desc=f"pretrain {cfg.model.name}",
            sizes_at=nested_sizes(cfg, dataset),
        )
    except DamagedFileError as e:
        if e.path != str(checkpoint):
            raise
        fix = f"delete the cache entry {checkpoint}; pretraining then starts from step 0"
        raise DamagedFileError(checkpoint, e.problem, fix) from None
    assert fr.valid is not None
    valid = {k: float(v) for k, v in fr.valid.means.items()}
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    training = fr.training()
    entry = {"model": state, "valid": valid, "seconds": fr.seconds, "key": key}
    save_torch(path, entry | {"training": training.to_dict()})
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    write_json(checksum_path(path), {"sha256": digest, "bytes": path.stat().st_size, "key": key})
    checkpoint.unlink(missing_ok=True)
    if group is not None:
        group.barrier()  # the others read the entry now
    return Pretrained(state, valid, fr.seconds, False, training)
