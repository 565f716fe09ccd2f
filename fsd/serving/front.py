"""A thin ASGI front for MLflow's scoring app: bounded bodies, bounded time, short errors.

MLflow's scoring server (``mlflow.pyfunc.scoring_server.init``, a FastAPI app) reads the whole
body, parses it, and answers a mistake with its message, which can quote the request (the
DataFrame, i.e. the first bytes of every clip), Python object addresses, local paths and a
stack trace; a missing Content-Type is a 500, and it drops columns and params the signature
does not declare before the model sees them. :class:`Front` wraps that app unchanged and, for
``POST /invocations`` only:

- refuses a body over ``max_body_bytes`` with 413 while reading it (the declared
  Content-Length first), before anything is parsed; a too-large body is drained up to
  ``drain_bytes`` so the client reads the answer instead of a reset connection;
- refuses a missing or unsupported Content-Type (415), a body that is not UTF-8 JSON / CSV /
  parquet (400), an unknown top-level key, any column but ``audio`` and any unknown param
  (400), i.e. what ``fsd.serving.requests`` means to refuse but never sees;
- answers 408 when the body takes longer than ``timeout_s`` to arrive, 503 when the app takes
  longer than ``timeout_s`` to answer;
- rewrites every error body to ``{"error_code": ..., "message": ...}`` of at most
  ``MAX_MESSAGE`` characters, without payload bytes (runs of base64), object addresses, paths
  or traces; a 5xx for a client mistake cannot come out of it, an unexpected failure is a
  plain 500 "internal error" (its trace goes to the server's log only).

Nothing here imports mlflow: the front is tested on any ASGI app.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fsd.serving.requests import AUDIO_COLUMN, KNOWN_PARAMS

log = logging.getLogger(__name__)

MAX_MESSAGE = 300
JSON_TYPES = ("application/json",)
CSV_TYPES = ("text/csv",)
PARQUET_TYPES = ("application/vnd.apache.parquet",)  # what MLflow 3's scoring server takes
JSON_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_B64_RUN = re.compile(r"[A-Za-z0-9+/=_-]{24,}")
_ADDRESS = re.compile(r"\s*at 0x[0-9a-fA-F]+")
_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?(?:[\\/][\w.@+~-]+){2,}[\\/]?")


class Refused(Exception):
    """A client mistake found by the front: ``status`` and a short message."""

    def __init__(self, status: int, message: str, code: str = "BAD_REQUEST"):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def short_message(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` without what must never reach a client: the request MLflow quotes ("Failed to
    predict data '...'"), runs of base64 (payload bytes), object addresses, paths; one line,
    at most ``limit`` characters."""
    text = str(text or "")
    head, sep, tail = text.rpartition("\nError: ")
    if sep and head.startswith("Failed to "):
        text = tail  # the model's own message, after MLflow's quote of the input
    text = text.split("\nTraceback", 1)[0]
    text = _ADDRESS.sub("", text)
    text = _B64_RUN.sub("<...>", text)
    text = _PATH.sub("<path>", text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error_code": code, "message": short_message(message)}).encode()


class Front:
    """ASGI middleware around a scoring app (see the module docstring)."""

    def __init__(self, app, *, max_body_bytes: int = 16 * 2**20, timeout_s: float = 60.0,
                 drain_bytes: int | None = None, columns: Iterable[str] = (AUDIO_COLUMN,),
                 known_params: Iterable[str] = KNOWN_PARAMS, path: str = "/invocations"):
        self.app = app
        self.max_body_bytes = int(max_body_bytes)
        self.timeout_s = float(timeout_s)
        self.drain_bytes = int(drain_bytes if drain_bytes is not None else 8 * max_body_bytes)
        self.columns = list(columns)
        self.known_params = frozenset(known_params)
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or scope.get("path") != self.path:
            await self.app(scope, receive, send)
            return
        try:
            if scope.get("method") != "POST":
                raise Refused(405, f"use POST for {self.path}", "METHOD_NOT_ALLOWED")
            headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                       for k, v in scope.get("headers", [])}
            mime = self._mime(headers.get("content-type"))
            try:  # a client that sends its body slowly gets the same time as the model
                body = await asyncio.wait_for(self._read_body(headers, receive), self.timeout_s)
            except (asyncio.TimeoutError, TimeoutError):
                raise Refused(408, f"the request body did not arrive within {self.timeout_s:g} s",
                              "REQUEST_TIMEOUT") from None
            self._check(mime, body)
        except Refused as exc:
            await _respond(send, exc.status, error_body(exc.code, exc.message))
            return
        await self._forward(scope, body, send)

    # --- checks before the app sees the request ---------------------------------------------

    def _mime(self, content_type: str | None) -> str:
        if not content_type or not content_type.strip():
            raise Refused(415, "missing Content-Type; send application/json (or text/csv, "
                          "application/vnd.apache.parquet)", "UNSUPPORTED_MEDIA_TYPE")
        mime, _, rest = content_type.partition(";")
        mime = mime.strip().lower()
        if mime not in JSON_TYPES + CSV_TYPES + PARQUET_TYPES:
            raise Refused(415, f"unsupported Content-Type {mime[:60]!r}; send application/json "
                          "(or text/csv, application/vnd.apache.parquet)", "UNSUPPORTED_MEDIA_TYPE")
        for param in rest.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
                    "utf-8", "utf8"):
                raise Refused(415, "only UTF-8 is supported", "UNSUPPORTED_MEDIA_TYPE")
        return mime

    async def _read_body(self, headers: dict[str, str], receive: Receive) -> bytes:
        declared = headers.get("content-length")
        too_large = Refused(413, f"request body larger than {self.max_body_bytes} bytes; send "
                            "fewer or smaller clips per request", "REQUEST_TOO_LARGE")
        if declared is not None:
            try:
                n = int(declared)
            except ValueError:
                raise Refused(400, "invalid Content-Length") from None
            if n > self.drain_bytes:
                raise too_large  # not even drained: the connection closes after the answer
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Refused(400, "client disconnected before the body was complete")
            data = message.get("body", b"")
            size += len(data)
            if size <= self.max_body_bytes:
                chunks.append(data)
            elif chunks:
                chunks = []  # over the limit: keep reading (draining), keep nothing
            if size > self.drain_bytes:
                raise too_large
            if not message.get("more_body", False):
                break
        if size > self.max_body_bytes:
            raise too_large
        body = b"".join(chunks)
        if not body:
            raise Refused(400, "empty request body")
        return body

    def _check(self, mime: str, body: bytes) -> None:
        if mime in JSON_TYPES:
            self._check_json(body)
        elif mime in CSV_TYPES:
            self._check_csv(body)
        else:
            self._check_parquet(body)

    def _check_json(self, body: bytes) -> None:
        try:
            doc = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise Refused(400, "the body is not UTF-8 text") from None
        except (json.JSONDecodeError, RecursionError) as exc:
            where = f" (line {exc.lineno} column {exc.colno})" if hasattr(exc, "lineno") else ""
            raise Refused(400, f"invalid JSON{where}") from None
        if not isinstance(doc, dict):
            raise Refused(400, f"expected a JSON object with one of {list(JSON_KEYS)}, got a "
                          f"{type(doc).__name__}")
        keys = [k for k in doc if k != "params"]
        unknown = [k for k in keys if k not in JSON_KEYS]
        if unknown or len(keys) != 1:
            raise Refused(400, f"expected exactly one of {list(JSON_KEYS)} (and optional "
                          f"'params'), got {_names(doc)}")
        data = doc[keys[0]]
        if keys[0] == "dataframe_split":
            if not isinstance(data, dict):
                raise Refused(400, "dataframe_split must be an object with 'columns' and 'data'")
            if "columns" in data:
                self._columns(data["columns"])
        elif keys[0] in ("dataframe_records", "instances"):
            if not isinstance(data, list):
                raise Refused(400, f"{keys[0]} must be a list")
            for row in data:
                if isinstance(row, dict):
                    self._columns(list(row))
        elif isinstance(data, dict):
            self._columns(list(data))
        params = doc.get("params")
        if params is not None:
            if not isinstance(params, dict):
                raise Refused(400, "params must be a JSON object")
            unknown_p = [str(k) for k in params if k not in self.known_params]
            if unknown_p:
                raise Refused(400, f"unknown param(s) {_names(unknown_p)}; known: "
                              f"{sorted(self.known_params)}", "INVALID_PARAMETER_VALUE")

    def _columns(self, columns: Any) -> None:
        if not isinstance(columns, list) or [str(c) for c in columns] != self.columns:
            got = _names(columns) if isinstance(columns, (list, dict)) else "not a list"
            raise Refused(400, f"expected exactly the column(s) {self.columns}, got {got}",
                          "INVALID_PARAMETER_VALUE")

    def _check_csv(self, body: bytes) -> None:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise Refused(400, "the CSV body is not UTF-8 text") from None
        try:
            header = next(csv.reader(io.StringIO(text)), None)
        except csv.Error:
            raise Refused(400, "not a readable CSV") from None
        self._columns([h.strip() for h in header] if header else [])

    def _check_parquet(self, body: bytes) -> None:
        try:
            import pyarrow.parquet as pq

            names = list(pq.read_schema(io.BytesIO(body)).names)
        except ImportError:
            raise Refused(415, "parquet is not supported by this server",
                          "UNSUPPORTED_MEDIA_TYPE") from None
        except Exception:  # pyarrow raises several types for junk; all mean "not parquet"
            raise Refused(400, "not a readable parquet file") from None
        names = [n for n in names if not n.startswith("__index_level_")]
        self._columns(names)

    # --- the app, with a deadline and its answer checked ----------------------------------

    async def _forward(self, scope: Scope, body: bytes, send: Send) -> None:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # nothing more; the app is cancelled on timeout
            return {"type": "http.disconnect"}

        start: dict[str, Any] = {}
        parts: list[bytes] = []

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))

        try:
            await asyncio.wait_for(self.app(scope, receive, capture), timeout=self.timeout_s)
        except (asyncio.TimeoutError, TimeoutError):
            await _respond(send, 503, error_body(
                "REQUEST_TIMEOUT", f"the request took longer than {self.timeout_s:g} s; send "
                "fewer clips or a cheaper TTA"), extra=[(b"retry-after", b"5")])
            return
        except Exception:
            log.exception("the scoring app failed")
            await _respond(send, 500, error_body("INTERNAL_ERROR", "internal error"))
            return
        status = int(start.get("status", 500))
        if status < 400:
            await send(start)
            await send({"type": "http.response.body", "body": b"".join(parts)})
            return
        raw = b"".join(parts)
        code, message = _parse_error(raw)
        if status == 504 or code == "REQUEST_TIMEOUT":  # MLflow's own deadline
            status, code, message = 503, "REQUEST_TIMEOUT", "the request took too long"
        elif status >= 500:
            log.error("the scoring app answered %d: %s", status, raw[:2000])
            code, message = "INTERNAL_ERROR", "internal error"
        await _respond(send, status, error_body(code or "BAD_REQUEST", message or "bad request"))


def _parse_error(raw: bytes) -> tuple[str, str]:
    try:
        doc = json.loads(raw.decode("utf-8", errors="replace"))
    except ValueError:
        return "", raw[:1000].decode("utf-8", errors="replace")
    if isinstance(doc, dict):
        return str(doc.get("error_code", "")), str(doc.get("message", doc.get("detail", "")))
    return "", str(doc)[:1000]


def _names(items: Any, n: int = 5) -> str:
    names = [str(k)[:30] for k in list(items)[:n]]
    return str(names)[:-1] + (", ...]" if len(items) > n else "]")


async def _respond(send: Send, status: int, body: bytes,
                   extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())] + list(extra or [])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
