"""Inter-process locks for what several workers on one machine write into the same place.

``file_lock(path)`` is an exclusive ``fcntl.flock`` on ``path`` (created if needed): held
until the ``with`` block ends or the process dies (the kernel drops it then, so a killed
holder never leaves a stale lock behind). The holder's pid and host are written into the file
so a waiter can say whom it waits for. It works across processes of one host and on local
file systems; NFS only where the server supports ``flock``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


class LockTimeout(TimeoutError):
    """The lock was not free within the asked time."""


@contextmanager
def file_lock(path: str | Path, what: str = "", timeout: float | None = None,
              poll_s: float = 0.2) -> Iterator[Path]:
    """Hold an exclusive lock on ``path`` for the ``with`` block; wait (logging once) while
    another process holds it. ``timeout`` (seconds, None: forever) raises LockTimeout."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            log.info("%s is locked by %s; waiting for it", what or path, holder or "another process")
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if deadline is not None and time.monotonic() > deadline:
                        raise LockTimeout(f"{what or path} stayed locked by "
                                          f"{holder or 'another process'} for {timeout} s") from None
                    time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        return ""
