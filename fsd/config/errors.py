"""The config's one error type, and how an error message quotes a value."""

from __future__ import annotations

import reprlib
from typing import Any

# A YAML value or an error message quotes at most this much of a value.
MAX_SHOWN = 40


class ConfigError(ValueError):
    """A configuration file or override that cannot be accepted."""


def show(value: Any, limit: int = MAX_SHOWN) -> str:
    """A value for an error message: its repr, cut to ``limit`` characters."""
    try:
        r = reprlib.Repr()
        r.maxlevel, r.maxlist, r.maxdict, r.maxstring, r.maxother = 2, 4, 4, limit, limit
        text = r.repr(value)
    except Exception:  # a value whose repr fails is named by its type
        text = f"a {type(value).__name__}"
    return text if len(text) <= limit else text[:limit - 3] + "..."
