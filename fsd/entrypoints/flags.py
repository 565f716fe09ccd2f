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


def optional_int(text: str) -> int | None:
    """An int, or None for an empty string (MLflow's way of saying 'not given')."""
    text = str(text).strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def optional_float(text: str) -> float | None:
    text = str(text).strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
