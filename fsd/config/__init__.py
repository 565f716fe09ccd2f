"""One validated configuration object that drives every stage.

A config is a tree of dataclasses (:mod:`fsd.config.schema`), each field with its rule beside
it (:mod:`fsd.config.rules`). It is loaded from ``experiments/<name>.yaml``
(:mod:`fsd.config.loading`, YAML read with bounds by :mod:`fsd.config.safeyaml`) and
overridden by ``key=value`` pairs with dotted keys (``train.fold=3``;
:mod:`fsd.config.overrides`); the rules that tie fields together are
:mod:`fsd.config.checks`. A typo anywhere is a :class:`ConfigError` that names the valid keys.
"""

from fsd.config.errors import ConfigError
from fsd.config.loading import MAX_CONFIG_BYTES, dump_config, from_dict, load_config
from fsd.config.overrides import parse_overrides
from fsd.config.rules import Choice, Name, Range, Text, rule_of, ruled_fields
from fsd.config.safeyaml import MAX_CONFIG_NODES, safe_yaml
from fsd.config.schema import (
    BASELINE_MODELS,
    BASELINE_SCALERS,
    SECTIONS,
    AudioConfig,
    BaselineConfig,
    ClusterConfig,
    Config,
    DataConfig,
    EnsembleConfig,
    FoldConfig,
    LogMelConfig,
    ModelConfig,
    PCAConfig,
    StageConfig,
    StoreConfig,
    SummaryConfig,
    SweepConfig,
    TrackingConfig,
    TrainConfig,
    flatten,
)

__all__ = [
    "BASELINE_MODELS", "BASELINE_SCALERS", "MAX_CONFIG_BYTES", "MAX_CONFIG_NODES", "SECTIONS",
    "AudioConfig", "BaselineConfig", "Choice", "ClusterConfig", "Config", "ConfigError",
    "DataConfig", "EnsembleConfig", "FoldConfig", "LogMelConfig", "ModelConfig", "Name",
    "PCAConfig", "Range", "StageConfig", "StoreConfig", "SummaryConfig", "SweepConfig", "Text",
    "TrackingConfig", "TrainConfig", "dump_config", "flatten", "from_dict", "load_config",
    "parse_overrides", "rule_of", "ruled_fields", "safe_yaml",
]
