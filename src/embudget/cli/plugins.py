"""Backbones from outside embudget on the command line.

A plugin is a Python module that calls :func:`embudget.register_backbone` when imported. The
``embudget`` command imports, before it parses its arguments, the modules named in the
``EMBUDGET_PLUGINS`` environment variable (comma-separated) and the modules of the installed
packages' ``embudget.plugins`` entry points, so ``--model NAME`` and ``model.name`` accept what
they register. Nothing is imported when neither is set.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points

from embudget.errors import ConfigError

ENV_VAR = "EMBUDGET_PLUGINS"
ENTRY_POINT_GROUP = "embudget.plugins"


def plugin_modules() -> list[str]:
    """The modules to import: ``EMBUDGET_PLUGINS`` first, then the entry points."""
    named = [m.strip() for m in os.environ.get(ENV_VAR, "").split(",") if m.strip()]
    points = [ep.value.split(":")[0] for ep in entry_points(group=ENTRY_POINT_GROUP)]
    return list(dict.fromkeys([*named, *points]))


def load_plugins() -> list[str]:
    """Import every plugin module; returns their names. A module that cannot be imported is a
    :class:`~embudget.errors.ConfigError` naming it and where it was listed."""
    modules = plugin_modules()
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ConfigError(
                f"plugin module {name!r} (from {ENV_VAR} or the {ENTRY_POINT_GROUP!r} entry "
                f"points) cannot be imported: {e}; fix the name or make it importable "
                "(PYTHONPATH, pip install)"
            ) from e
    return modules
