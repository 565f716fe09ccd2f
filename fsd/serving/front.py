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
import hmac
import io
import json
import logging
import re
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fsd.inference.inflight import CANCEL
from fsd.serving.requests import AUDIO_COLUMN, KNOWN_PARAMS, REFUSALS, RequestError, check_param_types

log = logging.getLogger(__name__)

MAX_MESSAGE = 300
# What a 4xx from the scoring app says when the model did not refuse the request itself
# (MLflow's schema or parsing errors, whose own messages quote the request).
GENERIC_REFUSAL = ("the request does not fit the model's input: send one column 'audio' of "
                   "base64-encoded clips (or parquet with the clips as bytes)")
OPEN_PATHS = ("/ping", "/health")  # liveness probes answer without the token (nothing in them)
ERROR_CODES = frozenset({"BAD_REQUEST", "INVALID_PARAMETER_VALUE", "MALFORMED_REQUEST",
                         "REQUEST_TIMEOUT", "INTERNAL_ERROR", "UNSUPPORTED_MEDIA_TYPE",
                         "REQUEST_TOO_LARGE", "RESOURCE_EXHAUSTED", "INVALID_STATE",
                         "TEMPORARILY_UNAVAILABLE", "UNAUTHENTICATED"})
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


MAX_PARQUET_ROWS = 10_000  # far above any request's clips (ensemble.max_request_clips)


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
                 known_params: Iterable[str] = KNOWN_PARAMS, path: str = "/invocations",
                 token: str | None = None):
        self.app = app
        # a bearer token every request must carry (None: none asked); compared in constant time
        self.token = token.encode() if token else None
        self.max_body_bytes = int(max_body_bytes)
        self.timeout_s = float(timeout_s)
        self.drain_bytes = int(drain_bytes if drain_bytes is not None else 8 * max_body_bytes)
        self.columns = list(columns)
        self.known_params = frozenset(known_params)
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") == "http" and self.token is not None \
                and scope.get("path") not in OPEN_PATHS and not self._authorized(scope):
            await _respond(send, 401, error_body(
                "UNAUTHENTICATED", "missing or wrong bearer token: send 'Authorization: Bearer "
                "<token>'"), extra=[(b"www-authenticate", b'Bearer realm="fsd"')])
            return
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

    def _authorized(self, scope: Scope) -> bool:
        """Whether the request carries ``Authorization: Bearer <token>`` (constant-time; the
        header's value is never logged or echoed)."""
        given = b""
        for k, v in scope.get("headers", []):
            if k.lower() == b"authorization":
                scheme, _, value = v.partition(b" ")
                given = value.strip() if scheme.lower() == b"bearer" else b""
        return hmac.compare_digest(given, self.token or b"")

    # --- checks before the app sees the request ---------------------------------------------

    def _mime(self, content_type: str | None) -> str:
        if not content_type or not content_type.strip():
            raise Refused(415, "missing Content-Type; send application/json (or text/csv, "
                          "application/vnd.apache.parquet)", "UNSUPPORTED_MEDIA_TYPE")
        mime, _, rest = content_type.partition(";")
        mime = mime.strip().lower()
        if mime not in JSON_TYPES + CSV_TYPES + PARQUET_TYPES:
            raise Refused(415, "unsupported Content-Type; send application/json (or text/csv, "
                          "application/vnd.apache.parquet)", "UNSUPPORTED_MEDIA_TYPE")
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
        """The JSON shapes MLflow reads, each checked down to its cells: exactly the column
        ``audio``, every clip a string (base64), only known params. Messages name what was
        checked, never what was sent."""
        try:
            doc = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise Refused(400, "the body is not UTF-8 text") from None
        except (json.JSONDecodeError, RecursionError) as exc:
            where = f" (line {exc.lineno} column {exc.colno})" if hasattr(exc, "lineno") else ""
            raise Refused(400, f"invalid JSON{where}") from None
        if not isinstance(doc, dict):
            raise Refused(400, f"expected a JSON object with one of {list(JSON_KEYS)}, got "
                          f"a {_kind(doc)}")
        keys = [k for k in doc if k != "params"]
        if len(keys) != 1 or keys[0] not in JSON_KEYS:
            raise Refused(400, f"expected exactly one of {list(JSON_KEYS)} (and optional "
                          f"'params'), got {len(keys)} other key(s)")
        data = doc[keys[0]]
        if keys[0] == "dataframe_split":
            self._check_split(data)
        elif isinstance(data, list):
            for i, row in enumerate(data):  # records: [{"audio": "<base64>"}, ...]
                if not isinstance(row, dict):
                    raise Refused(400, f"{keys[0]} row {i}: expected an object "
                                  f"{{{AUDIO_COLUMN!r}: <base64>}}, got a {_kind(row)}")
                self._columns(list(row))
                _clip(row[AUDIO_COLUMN], i)
        elif isinstance(data, dict):  # columns: {"audio": ["<base64>", ...]} or one clip
            self._columns(list(data))
            clips = data[AUDIO_COLUMN]
            for i, clip in enumerate(clips if isinstance(clips, list) else [clips]):
                _clip(clip, i)
        else:
            raise Refused(400, f"{keys[0]} must be an object {{{AUDIO_COLUMN!r}: [...]}} or a "
                          f"list of rows, got a {_kind(data)}")
        params = doc.get("params")
        if params is not None:
            if not isinstance(params, dict):
                raise Refused(400, "params must be a JSON object")
            unknown_p = [k for k in params if k not in self.known_params]
            if unknown_p:
                raise Refused(400, f"{len(unknown_p)} unknown param(s); known: "
                              f"{sorted(self.known_params)}", "INVALID_PARAMETER_VALUE")
            try:
                check_param_types(params)
            except RequestError as exc:
                raise Refused(400, f"param {exc}", "INVALID_PARAMETER_VALUE") from None

    def _check_split(self, data: Any) -> None:
        if not isinstance(data, dict) or "columns" not in data or "data" not in data \
                or set(data) - {"columns", "data", "index"}:
            raise Refused(400, "dataframe_split must be an object with 'columns' "
                          f"([{AUDIO_COLUMN!r}]) and 'data' (optional 'index')")
        self._columns(data["columns"])
        rows = data["data"]
        if not isinstance(rows, list):
            raise Refused(400, "dataframe_split data must be a list of rows")
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != len(self.columns):
                raise Refused(400, f"dataframe_split row {i}: expected a list of "
                              f"{len(self.columns)} value(s)")
            _clip(row[0], i)

    def _columns(self, columns: Any) -> None:
        if not isinstance(columns, list) or [str(c) for c in columns] != self.columns:
            got = f"{len(columns)} column(s)" if isinstance(columns, (list, dict)) else \
                f"a {_kind(columns)}"
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
        """Columns from the schema, and the size the body decodes to from every page header
        (:mod:`fsd.serving.parquet_pages`: what pyarrow sizes its buffers by, whatever the
        footer claims), before MLflow builds a frame of it: a few KB of zstd can hold
        hundreds of MB of zeros, or millions of null rows."""
        from fsd.serving.parquet_pages import decoded_bytes

        try:
            decoded_bytes(body, self.max_body_bytes, MAX_PARQUET_ROWS)
        except OverflowError:
            raise Refused(413, f"the parquet body decodes to more than {self.max_body_bytes} "
                          f"bytes or {MAX_PARQUET_ROWS} rows; send fewer or smaller clips per "
                          "request", "REQUEST_TOO_LARGE") from None
        except (ValueError, TypeError, KeyError, IndexError, RecursionError):
            raise Refused(400, "not a readable parquet file") from None
        try:
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(io.BytesIO(body)).metadata
            names = list(meta.schema.to_arrow_schema().names)
        except ImportError:
            raise Refused(415, "parquet is not supported by this server",
                          "UNSUPPORTED_MEDIA_TYPE") from None
        except Exception:  # pyarrow raises several types for junk; all mean "not parquet"
            raise Refused(400, "not a readable parquet file") from None
        if meta.num_rows > MAX_PARQUET_ROWS:
            raise Refused(413, f"the parquet body holds more than {MAX_PARQUET_ROWS} rows",
                          "REQUEST_TOO_LARGE")
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

        refusals: list[tuple[int, str]] = []
        token = REFUSALS.set(refusals)  # the model notes its refusals here (same process)
        cancel = threading.Event()  # set when the request is given up: its work stops
        cancel_token = CANCEL.set(cancel)
        try:
            await asyncio.wait_for(self.app(scope, receive, capture), timeout=self.timeout_s)
        except (asyncio.TimeoutError, TimeoutError):
            cancel.set()  # the worker thread stops at its next window, batch or block
            await _respond(send, 503, error_body(
                "REQUEST_TIMEOUT", f"the request took longer than {self.timeout_s:g} s; send "
                "fewer clips or a cheaper TTA"), extra=[(b"retry-after", b"5")])
            return
        except Exception:
            log.exception("the scoring app failed")
            await _respond(send, 500, error_body("INTERNAL_ERROR", "internal error"))
            return
        except BaseException:
            cancel.set()  # the connection went away (the task is cancelled): stop the work
            raise
        finally:
            REFUSALS.reset(token)
            CANCEL.reset(cancel_token)
        status = int(start.get("status", 500))
        if status < 400:
            await send(start)
            await send({"type": "http.response.body", "body": b"".join(parts)})
            return
        raw = b"".join(parts)
        code, _ = _parse_error(raw)  # MLflow's message quotes the request: never passed on
        if refusals and refusals[-1][0] == 503:  # the work in flight is at its ceiling
            await _respond(send, 503, error_body("TEMPORARILY_UNAVAILABLE", refusals[-1][1]),
                           extra=[(b"retry-after", b"2")])
            return
        if status == 504 or code == "REQUEST_TIMEOUT":  # MLflow's own deadline
            status, code, message = 503, "REQUEST_TIMEOUT", "the request took too long"
        elif status >= 500:
            log.error("the scoring app answered %d: %s", status, raw[:2000])
            code, message = "INTERNAL_ERROR", "internal error"
        elif refusals:  # the model's own refusal, built from what it checked
            message = refusals[-1][1]
        else:
            log.info("the scoring app answered %d: %s", status, raw[:500])
            message = GENERIC_REFUSAL
        if code not in ERROR_CODES:
            code = "BAD_REQUEST"
        await _respond(send, status, error_body(code, message))


def _clip(value: Any, row: int) -> None:
    if not isinstance(value, str):
        raise Refused(400, f"row {row}: expected the clip's file bytes as base64 text, got a "
                      f"{_kind(value)}")


def _kind(value: Any) -> str:
    return {dict: "JSON object", list: "JSON array", str: "string", bool: "boolean",
            int: "number", float: "number", type(None): "null"}.get(type(value), "value")


def _parse_error(raw: bytes) -> tuple[str, str]:
    try:
        doc = json.loads(raw.decode("utf-8", errors="replace"))
    except ValueError:
        return "", raw[:1000].decode("utf-8", errors="replace")
    if isinstance(doc, dict):
        return str(doc.get("error_code", "")), str(doc.get("message", doc.get("detail", "")))
    return "", str(doc)[:1000]


async def _respond(send: Send, status: int, body: bytes,
                   extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())] + list(extra or [])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
