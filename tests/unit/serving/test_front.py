"""The serving front (fsd.serving.front) on a stand-in ASGI app: limits, short 4xx, no echo."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re

import pytest
from hostile_payloads import (
    flac_bomb,
    parquet_bomb,
    parquet_lying_footer,
    parquet_lying_page,
    parquet_many_nulls,
)

from fsd.serving.front import MAX_MESSAGE, Front, short_message

B64 = base64.b64encode(b"\x00\x01 some clip bytes that must never come back" * 20).decode()


def call(app, body: bytes | list[bytes] = b"", *, content_type: str | None = "application/json",
         method: str = "POST", path: str = "/invocations", length: bool = True):
    """Drive an ASGI app once; returns (status, body bytes)."""
    chunks = body if isinstance(body, list) else [body]
    headers = []
    if content_type is not None:
        headers.append((b"content-type", content_type.encode()))
    if length:
        headers.append((b"content-length", str(sum(map(len, chunks))).encode()))
    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    queue = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
             for i, c in enumerate(chunks)]
    out: dict = {"body": b""}

    async def receive():
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        else:
            out["body"] += message.get("body", b"")

    asyncio.run(app(scope, receive, send))
    return out["status"], out["body"]


class Echo:
    """A stand-in scoring app: answers with what MLflow's would, as told by ``mode``."""

    def __init__(self, mode: str = "ok", delay: float = 0.0):
        self.mode, self.delay, self.calls = mode, delay, 0

    async def __call__(self, scope, receive, send):
        self.calls += 1
        body = b""
        while True:
            m = await receive()
            body += m.get("body", b"")
            if not m.get("more_body"):
                break
        await asyncio.sleep(self.delay)
        if self.mode == "raise":
            raise RuntimeError(f"boom in /home/someone/project/fsd/x.py {body[:50]!r}")
        if self.mode == "quote":  # MLflow's answer to a model error: the request quoted
            from fsd.serving.requests import note_refusal

            note_refusal("row 0: not usable audio: not decodable audio (Format not recognised.)")
            status, text = 400, json.dumps({
                "error_code": "INVALID_PARAMETER_VALUE",
                "message": f"Failed to predict data '{body.decode()}'. \nError: row 0: not "
                           "usable audio: not decodable audio (Format not recognised.)",
                "stack_trace": "Traceback (most recent call last):\n  File \"/usr/lib/x.py\""})
        elif self.mode == "500":
            status, text = 500, json.dumps({"error_code": "INTERNAL_ERROR",
                                            "message": f"bad {body.decode()[:100]}",
                                            "stack_trace": "Traceback ..."})
        else:
            status, text = 200, json.dumps({"predictions": [{"n": len(body)}]})
        data = text.encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": data})


def good(params=None, columns=("audio",)) -> bytes:
    doc = {"dataframe_split": {"columns": list(columns), "data": [[B64] * len(columns)]}}
    if params is not None:
        doc["params"] = params
    return json.dumps(doc).encode()


def assert_short(body: bytes) -> dict:
    doc = json.loads(body)
    assert set(doc) == {"error_code", "message"}, doc
    msg = doc["message"]
    assert len(msg) <= MAX_MESSAGE and B64[:24] not in msg and "Traceback" not in msg
    assert not re.search(r"0x[0-9a-f]{6}", msg) and "/home/" not in msg and "/usr/" not in msg
    return doc


def test_good_requests_pass_through_unchanged():
    app = Echo()
    status, body = call(Front(app), good({"top_k": 2}))
    assert status == 200 and json.loads(body)["predictions"][0]["n"] > 0 and app.calls == 1
    for ok in ({"dataframe_records": [{"audio": B64}]}, {"inputs": {"audio": [B64]}},
               {"instances": [{"audio": B64}]}):
        assert call(Front(Echo()), json.dumps(ok).encode())[0] == 200
    assert call(Front(Echo()), b"audio\n" + B64.encode() + b"\n", content_type="text/csv")[0] == 200
    # other routes (/ping, /version) are the app's own
    assert call(Front(Echo()), method="GET", path="/ping")[0] == 200


@pytest.mark.parametrize("body,kwargs,status", [
    (b"{not json", {}, 400),
    (b"", {}, 400),
    (b"\xff\xfe\x00garbage", {}, 400),
    (b"[1, 2, 3]", {}, 400),
    (json.dumps({"dataframe_split": {"columns": ["audio"], "data": [[B64]]},
                 "dataframe_records": []}).encode(), {}, 400),
    (json.dumps({"data": [[B64]]}).encode(), {}, 400),
    (good(columns=("audio", "extra")), {}, 400),
    (good(columns=("sound",)), {}, 400),
    (json.dumps({"dataframe_records": [{"audio": B64, "x": 1}]}).encode(), {}, 400),
    (json.dumps({"inputs": {"audio": [B64], "x": [1]}}).encode(), {}, 400),
    (good({"tta_crops": 2, "bogus": 1}), {}, 400),
    (good(), {"content_type": None}, 415),
    (good(), {"content_type": "text/plain"}, 415),
    (good(), {"content_type": "application/json; charset=latin-1"}, 415),
    (b"audio,extra\n" + B64.encode() + b",1\n", {"content_type": "text/csv"}, 400),
    (b"PAR1 this is not parquet", {"content_type": "application/vnd.apache.parquet"}, 400),
    (good(), {"method": "GET"}, 405),
])
def test_client_mistakes_are_short_4xx_and_never_reach_the_app(body, kwargs, status):
    app = Echo()
    got, answer = call(Front(app), body, **kwargs)
    assert got == status, answer
    assert_short(answer)
    assert app.calls == 0


def test_body_limit_is_enforced_while_reading():
    app = Echo()
    front = Front(app, max_body_bytes=1000)
    big = b"{" + b" " * 5000 + b"}"
    status, answer = call(front, big)
    assert status == 413 and len(answer) < 400 and app.calls == 0
    # no Content-Length (chunked): counted as it arrives
    status, _ = call(front, [big[:600], big[600:]], length=False)
    assert status == 413 and app.calls == 0
    # a declared size far past the limit is refused without reading at all
    front = Front(app, max_body_bytes=1000, drain_bytes=2000)
    assert call(front, [b"x"], length=False)[0] == 400  # a one-byte body: just bad JSON
    status, _ = call(Front(app, max_body_bytes=10), good())
    assert status == 413


def test_error_bodies_from_the_app_are_shortened():
    status, answer = call(Front(Echo("quote")), good())
    doc = assert_short(answer)
    assert status == 400 and doc["message"].startswith("row 0: not usable audio")
    status, answer = call(Front(Echo("500")), good())
    assert status == 500 and assert_short(answer)["message"] == "internal error"
    status, answer = call(Front(Echo("raise")), good())
    assert status == 500 and assert_short(answer)["message"] == "internal error"


def test_a_slow_request_is_cut_at_the_time_limit():
    import time

    t0 = time.perf_counter()
    status, answer = call(Front(Echo(delay=5.0), timeout_s=0.3), good())
    assert status == 503 and time.perf_counter() - t0 < 3
    assert assert_short(answer)["error_code"] == "REQUEST_TIMEOUT"


def test_a_slow_body_is_cut_at_the_time_limit():
    async def run():
        out = {}

        async def receive():
            await asyncio.sleep(5)
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(m):
            out.setdefault("status", m.get("status"))

        scope = {"type": "http", "method": "POST", "path": "/invocations",
                 "headers": [(b"content-type", b"application/json")]}
        await Front(Echo(), timeout_s=0.2)(scope, receive, send)
        return out["status"]

    assert asyncio.run(run()) == 408


def test_short_message_strips_payload_addresses_and_paths():
    msg = short_message("Failed to predict data '   audio\n0  " + B64 + "'. \nError: Error opening "
                        "<_io.BytesIO object at 0x7f3a2b1c0d90>: at /tmp/pytest-1/x/y.wav " + "z" * 999)
    assert len(msg) <= MAX_MESSAGE and "0x7f" not in msg and "/tmp/" not in msg
    assert B64[:24] not in msg and msg.startswith("Error opening")


SECRET = "ZZSECRET <script>alert(1)</script>"


def test_app_messages_are_never_passed_on_only_the_models_own_refusals():
    # MLflow's 4xx quotes the request; without a refusal noted by the model the front answers
    # with its own fixed text
    async def quoting(scope, receive, send):
        await receive()
        text = json.dumps({"error_code": "INVALID_PARAMETER_VALUE",
                           "message": f"Failed to enforce schema of data '{SECRET}'. Error: "
                                      f"{SECRET}"}).encode()
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": text})

    status, answer = call(Front(quoting), good())
    assert status == 400 and "ZZSECRET" not in answer.decode() and "script" not in answer.decode()


@pytest.mark.parametrize("doc", [
    {"inputs": SECRET},
    {"inputs": [SECRET]},
    {"dataframe_records": [SECRET, SECRET]},
    {"instances": [SECRET]},
    {"dataframe_split": {"data": [[SECRET]]}},
    {"dataframe_split": {"columns": [SECRET], "data": [[B64]]}},
    {"dataframe_split": {"columns": ["audio"], "data": [[{"x": SECRET}]]}},
    {SECRET: 1},
    {"dataframe_split": {"columns": ["audio"], "data": [[B64]]}, "params": {SECRET: 1}},
])
def test_front_refusals_never_quote_the_request(doc):
    app = Echo()
    status, answer = call(Front(app), json.dumps(doc).encode())
    assert 400 <= status < 500 and app.calls == 0
    assert "ZZSECRET" not in answer.decode() and "script" not in answer.decode(), answer


@pytest.mark.parametrize("params", [{"top_k": SECRET}, {"tta_lengths": [SECRET]},
                                    {"seed": SECRET}, {"return_probabilities": SECRET},
                                    {"tta_crops": [SECRET]}])
def test_request_errors_never_quote_param_values(params):
    from fsd.serving.requests import RequestError, parse_params

    with pytest.raises(RequestError) as err:
        parse_params(params, default_lengths=[10], default_crops=1, default_top_k=1,
                     default_seed=0, n_classes=3)
    assert "ZZSECRET" not in str(err.value) and "script" not in str(err.value)


@pytest.mark.parametrize("build", [parquet_bomb, parquet_lying_footer])
def test_a_parquet_bomb_is_refused_from_its_page_headers(build):
    """Round 3: a footer claiming 1,000 bytes passed the footer check while its page header
    (what pyarrow believes) said 8 MiB."""
    bomb = build(8)
    assert len(bomb) < 20_000
    app = Echo()
    status, answer = call(Front(app, max_body_bytes=2**20), bomb,
                          content_type="application/vnd.apache.parquet")
    assert status == 413 and app.calls == 0 and "decodes to more than" in answer.decode()


def test_a_million_null_rows_are_refused():
    """Honest metadata, a few KB: millions of null rows cost memory per row, not per byte."""
    body = parquet_many_nulls(2_000_000)
    assert len(body) < 64_000
    app = Echo()
    status, answer = call(Front(app, max_body_bytes=2**20), body,
                          content_type="application/vnd.apache.parquet")
    assert status == 413 and app.calls == 0, answer


def test_a_page_header_that_lies_small_cannot_decode_past_it():
    """The other lie: the page header claims 1,000 bytes while its zstd data holds 8 MiB.
    The front admits it (its claim is small); the reader sizes its buffer by the claim and
    refuses the page, so the data never expands."""
    import pyarrow.parquet as pq

    body = parquet_lying_page(8)
    app = Echo()
    status, _ = call(Front(app, max_body_bytes=2**20), body,
                     content_type="application/vnd.apache.parquet")
    assert status == 200 and app.calls == 1
    with pytest.raises(OSError, match="Destination buffer is too small"):
        pq.read_table(io.BytesIO(body))


def test_a_flac_bomb_is_refused_from_its_header():
    from fsd.config import AudioConfig
    from fsd.data.audio import AudioError, load_audio
    from fsd.serving.requests import RequestError, check_headers

    bomb = flac_bomb(seconds=20)
    with pytest.raises(AudioError, match="too large once decoded"):
        load_audio(bomb, AudioConfig())
    with pytest.raises(RequestError, match="row 0: .*too large once decoded"):
        check_headers([bomb], AudioConfig())
    ok = flac_bomb(seconds=5, rate=44100, channels=2)
    with pytest.raises(RequestError, match="request too large once decoded"):
        check_headers([ok] * 100, AudioConfig(), max_samples=10 * 44100 * 2)


@pytest.mark.parametrize("params,name", [({"top_k": "x"}, "top_k"), ({"seed": [1]}, "seed"),
                                         ({"tta_crops": True}, "tta_crops"),
                                         ({"tta_lengths": ["a"]}, "tta_lengths"),
                                         ({"return_probabilities": "maybe"},
                                          "return_probabilities"),
                                         ({"window_seconds": {"a": 1}}, "window_seconds")])
def test_a_wrong_type_param_is_named_in_its_400(params, name):
    """Round 3: `top_k: "x"` got MLflow's generic schema message, which named nothing."""
    app = Echo()
    status, answer = call(Front(app), good(params))
    assert status == 400 and app.calls == 0
    msg = assert_short(answer)["message"]
    assert msg.startswith(f"param {name}: expected"), msg
