"""The YAML presets shipped in ``presets/``, layered by :func:`~embudget.config.load_config`.

- ``defaults.yaml``: bet.md's settings, every key described (documentation; equal to the
  dataclass defaults, which a test checks).
- ``<backbone>.yaml``: a backbone's own defaults, over bet.md's (``mf.yaml``, ``ncf.yaml``).
- ``fast.yaml`` and ``fast-<backbone>.yaml``: fast mode (bet.md §14.7), over the above.
- ``demo.yaml`` (always) and ``demo-faithful.yaml`` (faithful mode only): ``embudget demo``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

from embudget.errors import ConfigError

PRESET_DIR = Path(__file__).resolve().parent / "presets"

#: Backbones whose ``search``, ``bench`` and ``demo`` run fast mode unless ``--faithful`` is
#: given: fast mode was measured at or above the faithful search and above SU end to end for
#: these (MF and LightGCN on Gowalla, RESULTS.md "Fast mode"; NGCF, with LightGCN's preset, on
#: gowalla-mini, RESULTS.md "gowalla-mini, NGCF"). NCF's fast search stayed below SU from
#: scratch, so NCF runs the faithful procedure unless ``--fast`` is given.
FAST_BY_DEFAULT: frozenset[str] = frozenset({"mf", "lightgcn", "ngcf"})


def preset_path(name: str) -> Path:
    """The file of a shipped preset, e.g. ``preset_path("demo")``."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
        raise ConfigError(f"no preset {name!r}; shipped presets: {known}")
    return path


@cache
def _read(name: str) -> dict[str, Any] | None:
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        return None
    doc = yaml.safe_load(path.read_text())
    return dict(doc or {})


def load_preset(name: str) -> dict[str, Any]:
    """A preset's nested mapping (empty when the file does not exist)."""
    return _deep_copy(_read(name) or {})


def preset_layers(backbone: str, fast: bool) -> list[str]:
    """The presets :func:`~embudget.config.load_config` applies over bet.md's defaults, in
    order: the backbone's defaults, then (fast mode) ``fast`` and ``fast-<backbone>``."""
    names = [backbone, *(("fast", f"fast-{backbone}") if fast else ())]
    return [n for n in names if _read(n) is not None]


def backbone_defaults(backbone: str) -> dict[str, Any]:
    """The backbone's own defaults (``<backbone>.yaml``), empty for those that keep bet.md's."""
    return load_preset(backbone)


def fast_preset(backbone: str) -> dict[str, Any]:
    """The ``--fast`` settings for one backbone: ``fast.yaml`` updated by
    ``fast-<backbone>.yaml``."""
    return deep_update(load_preset("fast"), load_preset(f"fast-{backbone}"))


def is_fast(fast: bool | None, backbone: str) -> bool:
    """Whether ``fast`` (True, False, or None for the backbone's default) means fast mode."""
    return fast if fast is not None else backbone in FAST_BY_DEFAULT


def deep_update(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``a`` with ``b``'s values, merged section by section."""
    out = dict(a)
    for k, v in b.items():
        both = isinstance(v, dict) and isinstance(out.get(k), dict)
        out[k] = deep_update(out[k], v) if both else v
    return out


def _deep_copy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in d.items()}
