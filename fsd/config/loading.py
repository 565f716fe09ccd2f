"""A Config from a YAML file (bounded in size and nodes), a mapping, and overrides; and back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fsd.config.errors import ConfigError, show
from fsd.config.overrides import apply, parse_overrides
from fsd.config.safeyaml import bounded, safe_yaml
from fsd.config.schema import Config

MAX_CONFIG_BYTES = 1 << 20


def from_dict(data: dict[str, Any], overrides: list[str] | str | None = None) -> Config:
    """A validated Config from a mapping (as a YAML file holds) and ``key=value`` overrides."""
    config = Config()
    config.store.cache_dir = ""  # <output_dir>/cache unless set
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping, got {show(data)}")
    bounded(data or {}, "the config")
    apply(config, data or {})
    apply(config, parse_overrides(overrides))
    config.__post_init__()
    config.validate()
    return config


def load_config(path: str | Path | None = None, overrides: list[str] | str | None = None) -> Config:
    """Load ``path`` (YAML) or the defaults, apply ``key=value`` overrides, validate.

    A bare experiment name (``demo``) is looked up as ``experiments/demo.yaml``.
    """
    data: dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.exists() and p.suffix == "" and (Path("experiments") / f"{p}.yaml").exists():
            p = Path("experiments") / f"{p}.yaml"
        if not p.is_file():
            raise ConfigError(f"config file {show(str(p), 200)} does not exist")
        if p.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {show(str(p), 200)} is larger than "
                              f"{MAX_CONFIG_BYTES} bytes")
        try:
            text = p.read_text()
        except (OSError, UnicodeDecodeError):
            raise ConfigError(f"config file {show(str(p), 200)} is not readable UTF-8 text") \
                from None
        data = safe_yaml(text, f"config file {show(str(p), 200)}") or {}
        if not isinstance(data, dict):
            raise ConfigError(f"config file {show(str(p), 200)} must hold a mapping at the "
                              "top level")
        data.setdefault("name", p.stem)
    return from_dict(data, overrides)


def dump_config(config: Config) -> str:
    """The fully resolved config as YAML (logged with every run; loadable by load_config)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
