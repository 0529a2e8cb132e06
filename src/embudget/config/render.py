"""Configs as commented YAML: every key with its ``# (type) description``, RecBole style.

The descriptions live in ``presets/defaults.yaml``, one comment per key; this module reads
them back (:func:`key_docs`) and writes any resolved config the same way
(:func:`to_commented_yaml`, ``embudget config show``).
"""

from __future__ import annotations

import re
import typing
from dataclasses import fields, is_dataclass
from functools import cache
from typing import Any

import yaml

from embudget.config.load import type_name
from embudget.config.presets import PRESET_DIR
from embudget.config.schema import RunConfig, flatten

#: The header of ``presets/defaults.yaml``: the file is
#: ``to_commented_yaml(RunConfig(), DEFAULTS_HEADER)``.
DEFAULTS_HEADER = """\
bet.md's settings (the faithful procedure): the defaults of every embudget run.
Each key: `# (type) description`. The backbone presets (mf.yaml, ncf.yaml), then fast mode
(fast.yaml, fast-<backbone>.yaml), then --config files, then --set overrides are layered on top.
A test keeps this file equal to the defaults of embudget.config.schema.
"""
#: ``key: value  # (type) description`` or ``section:  # description``
_LINE = re.compile(r"^(?P<indent> *)(?P<key>[a-z_0-9]+):(?P<value>[^#]*?)\s*(?:#\s*(?P<doc>.*))?$")
_TYPED = re.compile(r"^\((?P<type>[^)]*)\)\s*(?P<text>.*)$")


def parse_comments(text: str) -> dict[str, tuple[str | None, str]]:
    """Dotted key -> (type in the comment, description) for every key line of a preset file;
    sections map to (None, description). Lines without a key (comments, blanks) are skipped."""
    out: dict[str, tuple[str | None, str]] = {}
    stack: list[tuple[int, str]] = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        indent = len(m["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = ".".join([k for _, k in stack] + [m["key"]])
        doc = (m["doc"] or "").strip()
        if m["value"].strip():
            typed = _TYPED.match(doc)
            out[key] = (typed["type"], typed["text"]) if typed else (None, doc)
        else:
            out[key] = (None, doc)
            stack.append((indent, m["key"]))
    return out


@cache
def key_docs() -> dict[str, tuple[str | None, str]]:
    """The descriptions of ``presets/defaults.yaml``, by dotted key."""
    return parse_comments((PRESET_DIR / "defaults.yaml").read_text())


def key_types() -> dict[str, str]:
    """Dotted key -> its type as comments write it (``int or null``, ``paper | standard``)."""
    out: dict[str, str] = {}

    def walk(cls: Any, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            tp = hints[f.name]
            if is_dataclass(tp):
                walk(tp, f"{prefix}{f.name}.")
            else:
                out[f"{prefix}{f.name}"] = type_name(tp)

    walk(RunConfig, "")
    return out


def _scalar(value: Any) -> str:
    """One value in YAML flow style: ``0.03``, ``null``, ``[5, 10, 20]``."""
    text = str(yaml.safe_dump(value, default_flow_style=True, width=1000))
    return text.replace("\n...\n", "").strip()


def to_commented_yaml(cfg: RunConfig, header: str = "", mark_changes: bool = False) -> str:
    """``cfg`` as YAML with each key's ``# (type) description``; with ``mark_changes``, keys
    that differ from bet.md's defaults also say ``[bet.md default: X]``."""
    docs, types_ = key_docs(), key_types()
    defaults = flatten(RunConfig().to_dict())
    rows: list[tuple[str, str]] = []

    def walk(tree: dict[str, Any], prefix: str, depth: int) -> None:
        for k, v in tree.items():
            key = f"{prefix}{k}"
            pad = "  " * depth
            doc = docs.get(key, (None, ""))[1]
            if isinstance(v, dict):
                rows.append((f"{pad}{k}:", doc))
                walk(v, f"{key}.", depth + 1)
                continue
            comment = f"({types_[key]}) {doc}".rstrip()
            if mark_changes and v != defaults[key]:
                comment += f" [bet.md default: {_scalar(defaults[key])}]"
            rows.append((f"{pad}{k}: {_scalar(v)}", comment))

    walk(cfg.to_dict(), "", 0)
    width = max(len(code) for code, _ in rows) + 2
    lines = [f"# {h}".rstrip() for h in header.splitlines()] if header else []
    for code, comment in rows:
        lines.append(f"{code.ljust(width)}# {comment}" if comment else code)
    return "\n".join(lines) + "\n"
