"""Connections of ``fsd serve``: uvicorn's h11 protocol with what it lacks against slow and
greedy clients (uvicorn 0.5x: a fresh connection has no timer, a request's headers may
trickle in for ever, and nothing limits one client's share).

- A header deadline: a request's headers must be complete within ``header_timeout`` s of the
  connection opening, or of the previous response (a keep-alive connection); else 408 and the
  connection is closed. An idle fresh connection is closed the same way. The body then has the
  front's ``timeout_s`` (408), the app its own (503); between requests uvicorn's
  ``timeout_keep_alive`` closes an idle keep-alive connection.
- At most ``max_connections`` open connections, and at most ``per_client`` from one address.
  A connection over either cap takes the place of the oldest connection in the same scope
  (all, or that address) that is still *waiting*: its request not yet received whole (no
  headers yet, a body still arriving, or idle between keep-alive requests), never one whose
  request is being answered. With no such connection, the new one is closed. So connections
  that trickle bytes cannot hold the server: each new client evicts one of them, sends its
  request at once and is served (64 tricklers reopening as they close left 0 of 28 requests
  served before this).
"""

from __future__ import annotations

import logging
import time

from fsd.serving.front import error_body

log = logging.getLogger(__name__)

_SLOW_HEADERS = error_body("REQUEST_TIMEOUT", "the request headers came too slowly")
_TIMEOUT_408 = (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
                b"Connection: close\r\nContent-Length: " + str(len(_SLOW_HEADERS)).encode()
                + b"\r\n\r\n" + _SLOW_HEADERS)


def guarded_protocol(header_timeout: float = 10.0, max_connections: int = 64,
                     per_client: int = 16):
    """The guarded h11 protocol class (module docstring); pass it as
    ``uvicorn.run(..., http=cls)``."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    by_address: dict[str, list] = {}  # open connections per client address, oldest first
    everyone: list = []

    class GuardedH11(H11Protocol):
        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._fsd_timer = None
            self._fsd_opened = time.monotonic()
            peer = transport.get_extra_info("peername")
            self._fsd_addr = str(peer[0]) if isinstance(peer, (tuple, list)) and peer else "?"
            mine = by_address.setdefault(self._fsd_addr, [])
            mine.append(self)
            everyone.append(self)
            for scope, cap, what in ((mine, per_client, f"from {self._fsd_addr}"),
                                     (everyone, max_connections, "in all")):
                if len(scope) > cap and not self._fsd_evict(scope):
                    log.warning("more than %d open connections %s, none waiting: closing a "
                                "new one", cap, what)
                    transport.close()
                    return
            self._fsd_arm()

        def _fsd_waiting(self) -> bool:
            """Its request is not being answered: no headers yet, a body still arriving, or
            idle between keep-alive requests."""
            return (not self.transport.is_closing() and self.conn.our_state is h11.IDLE
                    and self.conn.their_state in (h11.IDLE, h11.SEND_BODY)
                    and (self.cycle is None or not self.cycle.response_started)
                    and self.conn.their_state is not h11.DONE)

        def _fsd_evict(self, scope: list) -> bool:
            victims = [c for c in scope if c is not self and c._fsd_waiting()]
            if not victims:
                return False
            victim = min(victims, key=lambda c: c._fsd_opened)
            log.info("connection cap reached: closing the oldest waiting connection of %s",
                     victim._fsd_addr)
            victim._fsd_close()
            return True

        def _fsd_close(self) -> None:
            self._fsd_forget()
            if self.conn.our_state is h11.IDLE and self.conn.their_state is h11.IDLE:
                self.transport.write(_TIMEOUT_408)
            self.transport.close()

        def _fsd_forget(self) -> None:
            for scope in (by_address.get(self._fsd_addr, []), everyone):
                if self in scope:
                    scope.remove(self)
            if not by_address.get(self._fsd_addr, True):
                by_address.pop(self._fsd_addr, None)

        def _fsd_arm(self) -> None:
            self._fsd_cancel()
            self._fsd_timer = self.loop.call_later(header_timeout, self._fsd_expire)

        def _fsd_cancel(self) -> None:
            if getattr(self, "_fsd_timer", None) is not None:
                self._fsd_timer.cancel()
                self._fsd_timer = None

        def _fsd_expire(self) -> None:
            self._fsd_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            if self.conn.our_state is h11.IDLE:  # no answer under way: say why we close
                self.transport.write(_TIMEOUT_408)
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # the headers are complete
                self._fsd_cancel()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._fsd_arm()  # the next request's headers get the same deadline

        def connection_lost(self, exc) -> None:
            self._fsd_cancel()
            self._fsd_forget()
            super().connection_lost(exc)

    return GuardedH11
