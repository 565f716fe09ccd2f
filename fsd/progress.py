"""Progress that reads well both on a terminal and in a log file.

On a terminal (stderr is a TTY) a tqdm bar redraws in place; anywhere else (CI, ``mlflow run``
logs, a file) the bar is off and the caller writes one plain log line per unit of work (an
epoch, a shard, a fold) instead, so a log never fills with carriage-return redraws.
``FSD_PROGRESS=bar`` or ``=lines`` forces one or the other.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm


def interactive() -> bool:
    """Whether progress bars are drawn: stderr is a terminal (or FSD_PROGRESS=bar)."""
    forced = os.environ.get("FSD_PROGRESS", "").lower()
    if forced in ("bar", "lines"):
        return forced == "bar"
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def bar(iterable: Any = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar, drawn only when ``enabled`` and :func:`interactive`; otherwise a disabled
    one (every call on it is a no-op), and the caller logs lines (see :func:`lines`)."""
    return tqdm(iterable, disable=not (enabled and interactive()), dynamic_ncols=True, **kwargs)


def lines(enabled: bool = True) -> bool:
    """Whether the caller should log a plain line per unit of work: progress is wanted but no
    bar is drawn."""
    return enabled and not interactive()
