"""Work in flight across requests: a ceiling on the admitted work, and cooperative
cancellation of work whose request was given up.

- :data:`IN_FLIGHT` holds the view frames (the unit of :func:`fsd.inference.scoring.
  request_cost`) of every request being scored in this process. A request is admitted while
  the total stays within the ceiling, or when nothing else is in flight (so one request the
  model admits always runs); otherwise :class:`Busy` at once, which the serving front answers
  503 with Retry-After, instead of queueing the work behind minutes of other work.
- :data:`CANCEL` is the given-up flag of the request being served (a ``threading.Event`` the
  serving front sets when the request times out). Context variables follow the request into
  the scoring server's worker thread, so long work checks it between windows, batches and
  decoded blocks (:func:`check_cancel`) and stops: its admission and its decode slot are
  released when it stops, not minutes after its answer was sent.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Busy(RuntimeError):
    """The work in flight is at its ceiling: try again shortly (503)."""


class Cancelled(RuntimeError):
    """Work stopped because its request was given up (timed out or dropped)."""


CANCEL: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "fsd_cancel", default=None)


def check_cancel(cancel: threading.Event | None = None) -> None:
    """Raise :class:`Cancelled` when ``cancel`` (default: this request's flag) is set."""
    flag = cancel if cancel is not None else CANCEL.get()
    if flag is not None and flag.is_set():
        raise Cancelled("the request was given up; its work stopped")


class WorkBudget:
    """A thread-safe count of admitted work against a ceiling (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.in_flight = 0
        self.requests = 0

    @contextmanager
    def admit(self, cost: int, ceiling: int) -> Iterator[None]:
        cost = max(0, int(cost))
        with self._lock:
            if self.requests and self.in_flight + cost > ceiling:
                raise Busy(f"the server is busy: {self.in_flight:,} view frames in flight + "
                           f"{cost:,} > {ceiling:,}; retry shortly")
            self.in_flight += cost
            self.requests += 1
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= cost
                self.requests -= 1


IN_FLIGHT = WorkBudget()


class TurnLock:
    """A lock taken in arrival order. The scoring server runs forward passes one at a time;
    with a plain ``threading.Lock`` a long request that releases it between its window
    batches takes it straight back, and a short request waiting beside it starves. Here each
    waiter gets the next turn: a 5 s clip waits at most one batch of someone else's windows."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._next = 0
        self._serving = 0

    def __enter__(self) -> TurnLock:
        with self._cv:
            ticket = self._next
            self._next += 1
            while ticket != self._serving:
                self._cv.wait()
        return self

    def __exit__(self, *exc) -> None:
        with self._cv:
            self._serving += 1
            self._cv.notify_all()


@contextmanager
def slot(semaphore: threading.Semaphore, cancel: threading.Event | None = None,
         poll_s: float = 0.1) -> Iterator[None]:
    """Hold ``semaphore`` (a decode slot), giving up waiting for it when the request is
    cancelled."""
    flag = cancel if cancel is not None else CANCEL.get()
    while not semaphore.acquire(timeout=poll_s):
        check_cancel(flag)
    try:
        yield
    finally:
        semaphore.release()


def wait_idle(budget: WorkBudget = IN_FLIGHT, timeout: float = 10.0) -> bool:
    """Whether ``budget`` empties within ``timeout`` seconds (tests and benchmarks)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if budget.requests == 0:
            return True
        time.sleep(0.02)
    return budget.requests == 0
