"""Issue 9, item 4: the serving front (fsd.serving.front) on a stand-in ASGI app, and a real
``fsd serve`` on 127.0.0.1 (the session's tiny trained ensemble, tests/conftest_ensemble.py)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
from pathlib import Path

import pytest
from hostile_payloads import (
    flac_bomb,
    parquet_bomb,
    parquet_lying_footer,
    parquet_lying_page,
    parquet_many_nulls,
    rss_mb,
)

from fsd.serving.front import MAX_MESSAGE, Front, short_message

pytest_plugins = ["conftest_ensemble"]

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


# --- a real `fsd serve` ----------------------------------------------------------------------


def test_fsd_serve_answers_like_mlflow_and_refuses_hostile_requests(ensemble_tracking):
    from local_server import LocalServer, audio_request

    test_dir = Path(ensemble_tracking.cfg.data.root) / "FSDKaggle2018.audio_test"
    a, b = [p.read_bytes() for p in sorted(test_dir.glob("t_*.wav"))[:2]]
    b64 = base64.b64encode(a).decode()
    split = lambda rows, cols=("audio",): {"dataframe_split": {"columns": list(cols),  # noqa: E731
                                                              "data": rows}}
    bad = {
        "extra column": (split([[b64, 1]], cols=("audio", "x")), "application/json"),
        "unknown param": ({**split([[b64]]), "params": {"tta_crop": 3}}, "application/json"),
        "too costly": ({**split([[b64]]), "params": {"tta_lengths": [4000] * 16,
                                                      "tta_crops": 32}}, "application/json"),
        "bad audio": (split([[base64.b64encode(b"RIFF....WAVEjunk").decode()]]),
                      "application/json"),
        "truncated json": (json.dumps(split([[b64]]))[:-7], "application/json"),
        "csv with paths": ("audio\n/etc/passwd\n", "text/csv"),
        "parquet junk": (b"PAR1junkjunk", "application/vnd.apache.parquet"),
        "no content type": (json.dumps(split([[b64]])), ""),
        "too many clips": (split([[b64]] * 5), "application/json"),
        "20 MB": (b'{"dataframe_split": {"columns": ["audio"], "data": [["' + b"A" * 20_000_000,
                  "application/json"),
    }
    with LocalServer(ensemble_tracking.model_uri, front=True, start_timeout=240,
                     serve_args=["--max-body-bytes", str(4 * 2**20)]) as srv:
        status, alone = srv.invoke(audio_request([a], {"return_probabilities": True}))
        assert status == 200, alone
        status, both = srv.invoke(audio_request([b, a], {"return_probabilities": True}))
        assert status == 200, both
        # item 3: the same clip, the same labels whatever else is in the request (scores
        # within the README's tolerance, see the issue-19 test below)
        x, y = both["predictions"][1], alone["predictions"][0]
        assert [x[k] for k in x if k.startswith("label_")] == \
            [y[k] for k in y if k.startswith("label_")]
        assert max(abs(x[k] - y[k]) for k in x if k.startswith("prob_")) <= 1e-6
        # MLflow's other request formats pass the front: parquet with the clips as bytes
        import pandas as pd

        buf = io.BytesIO()
        pd.DataFrame({"audio": [a]}).to_parquet(buf)
        status, pq = srv.invoke(buf.getvalue(), content_type="application/vnd.apache.parquet")
        assert status == 200 and pq["predictions"][0]["label_1"] == alone["predictions"][0]["label_1"]
        seen = {}
        for name, (payload, ctype) in bad.items():
            status, answer = srv.invoke(payload, content_type=ctype)
            seen[name] = status
            assert 400 <= status < 500, (name, status, str(answer)[:500])
            text = json.dumps(answer)
            assert len(text) < 600, (name, text[:700])
            assert b64[:40] not in text and "Traceback" not in text and "/tmp" not in text
            assert not re.search(r"0x[0-9a-f]{6}", text), (name, text)
        assert seen["20 MB"] == 413 and seen["no content type"] == 415
        costly, ctype = bad["too costly"]
        assert "too costly" in json.dumps(srv.invoke(costly, content_type=ctype)[1])
        status, _ = srv.invoke(audio_request([a]))  # still serving
        assert status == 200


# --- issue 19: echoed payloads, compressed bombs, slow clients, batch tolerance --------------

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


class _Peak:
    """The peak RSS (MB) of a process, sampled every 20 ms while in the block."""

    def __init__(self, pid: int):
        import threading

        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            self._stop.wait(0.02)

    def __enter__(self):
        self.peak = rss_mb(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _close_time(sock, limit: float) -> float:
    """Seconds until the server closes ``sock`` (reads until EOF), at most ``limit``."""
    import socket
    import time

    t0 = time.monotonic()
    sock.settimeout(0.5)
    while time.monotonic() - t0 < limit:
        try:
            if sock.recv(4096) == b"":
                return time.monotonic() - t0
        except socket.timeout:
            continue
        except OSError:
            return time.monotonic() - t0
    return float("inf")


def test_fsd_serve_bounds_bombs_echoes_slow_clients_and_batches(ensemble_tracking):
    import socket
    import threading

    import numpy as np
    from local_server import LocalServer, audio_request

    test_dir = Path(ensemble_tracking.cfg.data.root) / "FSDKaggle2018.audio_test"
    a, b = [p.read_bytes() for p in sorted(test_dir.glob("t_*.wav"))[:2]]
    bomb = parquet_bomb(200)
    flac = base64.b64encode(flac_bomb()).decode()
    split = {"dataframe_split": {"columns": ["audio"], "data": [[flac]]}}
    with LocalServer(ensemble_tracking.model_uri, front=True, start_timeout=240) as srv:
        for _ in range(3):  # warm-up
            assert srv.invoke(audio_request([a]))[0] == 200
        # 1. compressed bombs: the answers are 4xx and the server does not grow
        with _Peak(srv.pid) as peak:
            base = rss_mb(srv.pid)
            status, answer = srv.invoke(bomb,
                                        content_type="application/vnd.apache.parquet")
            assert status == 413, answer
            for crafted in (parquet_lying_footer(200), parquet_many_nulls(5_000_000),
                            parquet_lying_page(200)):  # round 3: <= 64 KB crafted any way
                assert len(crafted) <= 64_000
                status, answer = srv.invoke(crafted,
                                            content_type="application/vnd.apache.parquet")
                assert status in (400, 413), answer
            answers = []
            threads = [threading.Thread(target=lambda: answers.append(srv.invoke(split)))
                       for _ in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert [s for s, _ in answers] == [400] * 3, answers
        assert "too large once decoded" in json.dumps(answers[0][1])
        assert peak.peak - base < 600, (base, peak.peak)
        # 4. nothing of the request comes back
        b64 = base64.b64encode(a).decode()
        for doc in ({"inputs": SECRET}, {"dataframe_records": [SECRET]},
                    {"dataframe_split": {"data": [[SECRET]]}},
                    {"dataframe_split": {"columns": ["audio"], "data": [[b64]]},
                     "params": {"top_k": SECRET}},
                    {"dataframe_split": {"columns": ["audio"], "data": [[b64]]},
                     "params": {"tta_lengths": [SECRET]}},
                    {"dataframe_split": {"columns": ["audio"], "data": [[SECRET]]}}):
            status, answer = srv.invoke(doc)
            assert 400 <= status < 500, (doc, status)
            assert "ZZSECRET" not in json.dumps(answer) and "script" not in json.dumps(answer)
        # 8. a clip's answer alone and third in a batch of three: the README's tolerance
        _, alone = srv.invoke(audio_request([a], {"return_probabilities": True}))
        _, three = srv.invoke(audio_request([b, b, a], {"return_probabilities": True}))
        x, y = alone["predictions"][0], three["predictions"][2]
        assert [x[f"label_{k}"] for k in (1, 2, 3)] == [y[f"label_{k}"] for k in (1, 2, 3)]
        probs = [k for k in x if k.startswith("prob_")]
        assert np.max(np.abs([x[k] - y[k] for k in probs])) <= 1e-6
        # 7. idle and slow-header connections are closed (default --header-timeout 10 s)
        idle = socket.create_connection(("127.0.0.1", srv.port))
        slow = socket.create_connection(("127.0.0.1", srv.port))
        slow.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\n")
        stop = threading.Event()

        def trickle():
            while not stop.wait(1.0):
                try:
                    slow.sendall(b"X")
                except OSError:
                    return
        threading.Thread(target=trickle, daemon=True).start()
        t_idle = _close_time(idle, 20)
        t_slow = _close_time(slow, 20)
        stop.set()
        idle.close()
        slow.close()
        assert t_idle < 15 and t_slow < 15, (t_idle, t_slow)
        assert srv.invoke(audio_request([a]))[0] == 200  # still serving


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
