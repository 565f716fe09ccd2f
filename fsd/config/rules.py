"""What a config field may hold: :class:`Range`, :class:`Choice`, :class:`Text`, :class:`Name`.

A field declares its rule beside itself (``n_folds: int = ruled(10, Range(2, 100))``); a
section (a nested dataclass) is declared with :func:`section`. :func:`require_rules` refuses,
at import, a dataclass with a field that is neither, so a field without a rule cannot exist,
and a rule cannot outlive its field.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

from fsd.config.errors import ConfigError, show

MAX_TEXT = 4096  # paths, URLs, column names
SEED = 2**32 - 1
RESAMPLE_TYPES = ("soxr_vhq", "soxr_hq", "soxr_mq", "soxr_lq", "soxr_qq", "kaiser_best",
                  "kaiser_fast", "fft", "scipy", "polyphase", "linear", "zero_order_hold",
                  "sinc_best", "sinc_medium", "sinc_fastest")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_RULE = "rule"
_SECTION = "section"


@dataclasses.dataclass(frozen=True)
class Range:
    """A finite number in [lo, hi] (an open end excludes it); for a list, each item, and the
    list holds ``min_len`` to ``max_len`` items."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False
    min_len: int = 0
    max_len: int = 64

    def ok(self, value: Any) -> bool:
        if isinstance(value, list):
            return self.min_len <= len(value) <= self.max_len and all(map(self._one, value))
        return self._one(value)

    def _one(self, v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        return ((self.lo < v if self.lo_open else self.lo <= v)
                and (v < self.hi if self.hi_open else v <= self.hi))

    def __str__(self) -> str:
        text = (f"{'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}"
                f"{')' if self.hi_open else ']'}")
        if self.max_len != 64 or self.min_len:
            return f"a list of {self.min_len} to {self.max_len} values in {text}"
        return f"in {text}"


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of ``values``; for a list, each item (an empty list allowed unless ``min_len``)."""

    values: tuple[str, ...]
    min_len: int = 0

    def ok(self, value: Any) -> bool:
        if isinstance(value, list):
            return len(value) >= self.min_len and all(v in self.values for v in value)
        return value in self.values

    def __str__(self) -> str:
        values = [str(v) for v in self.values]
        text = " or ".join(values) if len(values) == 2 else f"one of {', '.join(values)}"
        return f"a list of {text}" if self.min_len else text


@dataclasses.dataclass(frozen=True)
class Text:
    """Any text of at most ``max_len`` characters, without NUL (paths, URLs, column names)."""

    max_len: int = MAX_TEXT
    min_len: int = 0

    def ok(self, value: Any) -> bool:
        return (isinstance(value, str) and self.min_len <= len(value) <= self.max_len
                and "\x00" not in value)

    def __str__(self) -> str:
        return f"text of {self.min_len} to {self.max_len} characters"


@dataclasses.dataclass(frozen=True)
class Name:
    """A plain name: letters, digits, '.', '_', '-', starting with a letter or digit, at most
    100 characters (no path separator, no '..'); names folders and MLflow objects."""

    empty_ok: bool = False

    def ok(self, value: Any) -> bool:
        if value == "" and self.empty_ok:
            return True
        return (isinstance(value, str) and _PLAIN_NAME.fullmatch(value) is not None
                and ".." not in value)

    def __str__(self) -> str:
        return ("a plain name (letters, digits, '.', '_', '-'; no path separator or '..'"
                f"{'; or empty' if self.empty_ok else ''})")


SYSTEM_FOLDERS = ("/etc", "/proc", "/sys", "/dev", "/usr")


@dataclasses.dataclass(frozen=True)
class Folder:
    """A folder fsd writes into (outputs, the feature cache): text as :class:`Text`, and not
    ``/`` nor, once ``~`` and links are resolved, inside a system folder (``/etc``, ``/proc``,
    ``/sys``, ``/dev``, ``/usr``): a typo there must not fill or shadow the system's files."""

    max_len: int = MAX_TEXT

    def ok(self, value: Any) -> bool:
        if not Text(self.max_len, 1).ok(value):
            return False
        real = os.path.realpath(os.path.expanduser(value))
        return real != "/" and not any(real == d or real.startswith(d + "/")
                                       for d in SYSTEM_FOLDERS)

    def __str__(self) -> str:
        return (f"a folder path of 1 to {self.max_len} characters, not / and not inside "
                f"{', '.join(SYSTEM_FOLDERS)}: choose a folder of your own")


Rule = Range | Choice | Text | Name | Folder

BOOL = Choice((True, False))  # type: ignore[arg-type]
PROB = Range(0, 1)
POS = Range(0, 1e9, lo_open=True)
COUNT = Range(0, 10**9)
EPOCHS = Range(0, 100_000)
FRAMES = Range(1, 100_000)
SEEDS = Range(0, SEED)
FFT = Range(16, 65536)
HOP = Range(1, 65536)
RATE = Range(1000, 384_000)
LR = Range(0, 10, lo_open=True)
TEXT = Text()


def ruled(default: Any, rule: Rule) -> Any:
    """A dataclass field with its default and its rule (a list default is copied per
    instance)."""
    if isinstance(default, list):
        items = list(default)
        return dataclasses.field(default_factory=lambda: list(items), metadata={_RULE: rule})
    return dataclasses.field(default=default, metadata={_RULE: rule})


def section(factory: Callable[[], Any]) -> Any:
    """A nested section: a dataclass whose own fields carry the rules."""
    return dataclasses.field(default_factory=factory, metadata={_SECTION: True})


def rule_of(f: dataclasses.Field) -> Rule | None:
    """The rule declared with a field; None for a section."""
    return f.metadata.get(_RULE)


def require_rules(cls: type) -> None:
    """Refuse a config dataclass with a field that declares neither a rule nor a section."""
    for f in dataclasses.fields(cls):
        if (f.metadata.get(_RULE) is None) == (not f.metadata.get(_SECTION)):
            raise TypeError(f"{cls.__name__}.{f.name} declares no rule: give it "
                            "ruled(default, rule) or section(factory)")


def ruled_fields(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any, Rule]]:
    """(dotted key, value, rule) of every leaf field of a config object, depth first."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get(_SECTION):
            yield from ruled_fields(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value, f.metadata[_RULE]


def check_rules(obj: Any) -> None:
    """Raise ConfigError naming the first field whose value breaks its rule."""
    for key, value, rule in ruled_fields(obj):
        if not rule.ok(value):
            raise ConfigError(f"{key} must be {rule}, got {show(value)}")
