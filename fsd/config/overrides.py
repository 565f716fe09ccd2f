"""``key=value`` overrides with dotted keys, and turning a YAML value or an override string
into a field's declared type."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from fsd.config.errors import ConfigError, show
from fsd.config.safeyaml import safe_yaml


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Turn a YAML value or an override string into the field's declared type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return coerce(value, args[0], key)
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                value = safe_yaml(text, key)
            else:
                value = [v for v in text.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} expects a list, got {show(value)}")
        return [coerce(v, item, key) for v in value]
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if not isinstance(value, (str, int, float)):
                raise ValueError(value)
            text = str(value).strip().lower()
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off"):
                return False
            raise ValueError(value)
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ValueError(value)
            number = float(value) if isinstance(value, str) else value
            if isinstance(number, float) and not (math.isfinite(number) and number.is_integer()):
                raise ValueError(value)
            return int(number)
        if tp is float:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ValueError(value)
            return float(value)
        if tp is str:
            if value is None:
                return ""
            if isinstance(value, (list, tuple, dict, set, bytes)):  # `name: [1, 2]`
                raise ValueError(value)
            return str(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{key} expects {tp.__name__}, got {show(value)}") from None
    return value


def apply(obj: Any, updates: dict[str, Any], prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    valid = [f.name for f in dataclasses.fields(obj)]
    for k, v in updates.items():
        key = f"{prefix}{show(k, 60) if not isinstance(k, str) or len(k) > 60 else k}"
        if k not in valid:
            raise ConfigError(
                f"unknown config key {key!r}; valid keys{' under ' + prefix[:-1] if prefix else ''}"
                f": {', '.join(valid)}"
            )
        current = getattr(obj, k)
        if dataclasses.is_dataclass(current):
            if not isinstance(v, dict):
                raise ConfigError(f"{key} is a section; give it a mapping, got {show(v)}")
            apply(current, v, key + ".")
        else:
            setattr(obj, k, coerce(v, hints[k], key))


def parse_overrides(pairs: list[str] | str | None) -> dict[str, Any]:
    """``["train.fold=3", "model.width=0.35"]`` (or one space-separated string) -> nested dict."""
    if not pairs:
        return {}
    if isinstance(pairs, str):
        pairs = pairs.split()
    nested: dict[str, Any] = {}
    for pair in pairs:
        if not isinstance(pair, str) or "=" not in pair:
            raise ConfigError(f"override {show(pair)} is not key=value")
        key, value = pair.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {show(pair)} has an empty key part")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {show(pair)} conflicts with an earlier one")
        node[parts[-1]] = value
    return nested
