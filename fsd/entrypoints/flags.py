"""Command-line values as MLflow passes them (every parameter arrives as a string)."""

from __future__ import annotations

import argparse


def parse_flag(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _optional(text: str, kind: type, what: str):
    text = str(text).strip()
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def optional_int(text: str) -> int | None:
    """An int, or None for an empty string (MLflow's way of saying 'not given')."""
    return _optional(text, int, "an integer")


def optional_float(text: str) -> float | None:
    """A number, or None for an empty string."""
    return _optional(text, float, "a number")
