"""Whether a process is still the one that started: its pid and its start time (Linux).

Beside :mod:`fsd.locks`: both answer "is the holder still there?" for work several processes
share (a run left RUNNING, a lock in the model registry), without MLflow.
"""

from __future__ import annotations

import os
from pathlib import Path


def proc_start(pid: int) -> str:
    """The start time of process ``pid`` in clock ticks since boot (Linux), '' elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # the command name (field 2) may hold spaces and parentheses; fields follow the last ')'
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else ""


def process_alive(pid: int, start: str = "") -> bool:
    """Whether process ``pid`` (on this host) is still the one that started with ``start``."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except OSError:
        return False
    if start:
        now = proc_start(pid)
        if now and now != start:
            return False  # the pid was reused by another process
    return True
