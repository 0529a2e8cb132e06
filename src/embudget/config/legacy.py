"""Format 1 of the config: one flat ``search`` section. Its keys, mapped to format 2's.

:data:`LEGACY_KEYS` names the new key when a format-1 key is given (an unknown-key error says
where it moved) and lets ``scripts/migrate_results.py`` rewrite format-1 run directories.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: format-1 dotted key -> format-2 dotted key (keys not listed kept their name)
LEGACY_KEYS: dict[str, str] = {
    "search.candidates": "search.sampler.candidates",
    "search.max_attempts": "search.sampler.max_attempts",
    "search.on_exhausted": "search.sampler.on_exhausted",
    "search.size_step": "search.sampler.size_step",
    "search.pretrain": "search.pretrain.mode",
    "search.nested_kept_min": "search.pretrain.nested_kept_min",
    "search.finetune_epochs": "search.probe.epochs",
    "search.finetune_steps": "search.probe.steps",
    "search.finetune_lr": "search.probe.lr",
    "search.finetune_lr_decay": "search.probe.lr_decay",
    "search.finetune_lr_decay_every": "search.probe.lr_decay_every",
    "search.finetune_lr_min": "search.probe.lr_min",
    "search.fitness_user_fraction": "search.probe.user_fraction",
    "search.predictor_updates": "search.predictor.updates",
    "search.predictor_update": "search.predictor.update_mode",
    "search.predictor_output": "search.predictor.output",
    "search.retrain_top": "search.retrain.top",
    "search.retrain_init": "search.retrain.init",
    "search.retrain_patience": "search.retrain.patience",
    "search.retrain_max_steps": "search.retrain.max_steps",
    "search.retrain_validate_first": "search.retrain.validate_first",
}


def upgrade(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A format-1 config mapping (e.g. an old run's ``config.yaml``) in format 2."""
    out: dict[str, Any] = {k: v for k, v in doc.items() if k != "search"}
    search: dict[str, Any] = {}
    for name, value in dict(doc.get("search") or {}).items():
        new = LEGACY_KEYS.get(f"search.{name}", f"search.{name}")
        node = search
        *parents, leaf = new.split(".")[1:]
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    if "search" in doc:
        out["search"] = search
    return out
