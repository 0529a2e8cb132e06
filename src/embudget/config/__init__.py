"""The run configuration: typed frozen sections, shipped YAML presets, strict loading.

- :mod:`~embudget.config.choices`: the allowed values of each choice, as ``Literal`` types.
- :mod:`~embudget.config.schema`: the dataclasses (defaults = bet.md's settings) and the hash.
- ``presets/*.yaml``: every key described (``defaults.yaml``), backbone defaults, fast mode,
  the demo's reductions; :mod:`~embudget.config.presets` layers them.
- :mod:`~embudget.config.load`: :func:`load_config` (precedence, strict keys and types).
- :mod:`~embudget.config.render`: a resolved config as commented YAML (``embudget config show``).
"""

from embudget.config.choices import *  # noqa: F403
from embudget.config.choices import __all__ as _choices_all
from embudget.config.legacy import LEGACY_KEYS
from embudget.config.load import load_config, parse_override
from embudget.config.presets import (
    FAST_BY_DEFAULT,
    backbone_defaults,
    fast_preset,
    is_fast,
    load_preset,
    preset_layers,
    preset_path,
)
from embudget.config.render import to_commented_yaml
from embudget.config.schema import (
    HASH_FORMAT,
    RUNTIME_KEYS,
    BudgetConfig,
    DataConfig,
    EvalConfig,
    ModelConfig,
    PredictorConfig,
    PretrainConfig,
    ProbeConfig,
    RetrainConfig,
    RunConfig,
    SamplerConfig,
    SearchConfig,
    TrainConfig,
    flatten,
)
from embudget.config.validate import validate

__all__ = [
    *_choices_all,
    "FAST_BY_DEFAULT",
    "HASH_FORMAT",
    "LEGACY_KEYS",
    "RUNTIME_KEYS",
    "BudgetConfig",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "PredictorConfig",
    "PretrainConfig",
    "ProbeConfig",
    "RetrainConfig",
    "RunConfig",
    "SamplerConfig",
    "SearchConfig",
    "TrainConfig",
    "backbone_defaults",
    "fast_preset",
    "flatten",
    "is_fast",
    "load_config",
    "load_preset",
    "parse_override",
    "preset_layers",
    "preset_path",
    "to_commented_yaml",
    "validate",
]
