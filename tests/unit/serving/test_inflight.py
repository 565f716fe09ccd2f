"""Issue 25 item 3: work in flight is bounded across requests. A request that times out stops
at its next window batch or decoded block (cooperative cancellation) and frees its admission
and decode slot; past the ceiling of admitted work, new work is a 503 at once."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from band_ensemble import SR, TONES, BandEnsemble, config, tone
from test_front import call

from fsd.inference.inflight import IN_FLIGHT, Busy, WorkBudget, wait_idle
from fsd.serving.front import Front
from fsd.serving.requests import RequestError, score_request


def test_the_budget_admits_up_to_its_ceiling_and_one_request_always():
    b = WorkBudget()
    with b.admit(900, 1000):
        with b.admit(100, 1000):
            with pytest.raises(Busy, match="busy: 1,000 view frames in flight"):
                with b.admit(1, 1000):
                    pass
        assert b.in_flight == 900
    with b.admit(5000, 1000):  # alone: admitted (the model's own bound applies before)
        assert b.requests == 1
    assert b.in_flight == 0 and b.requests == 0


class SlowBand(BandEnsemble):
    """The stand-in ensemble, ``delay`` seconds per scoring call (a window batch)."""

    def __init__(self, cfg, delay: float):
        super().__init__(cfg)
        self.delay = delay

    def predict(self, logmels, summaries, lengths, crops, seed):
        time.sleep(self.delay)
        return super().predict(logmels, summaries, lengths, crops, seed)


class Scoring:
    """MLflow's scoring app as far as the front sees it: the pyfunc's predict in a worker
    thread (context copied, as Starlette does), a refusal 400, Busy 503, else 200."""

    def __init__(self, ensemble):
        self.ensemble = ensemble

    async def __call__(self, scope, receive, send):
        body = (await receive())["body"]
        doc = json.loads(body)
        frame = pd.DataFrame({"audio": [r[0] for r in doc["dataframe_split"]["data"]]})
        try:
            out = await asyncio.to_thread(score_request, self.ensemble, frame, doc.get("params"))
            status, text = 200, json.dumps({"predictions": out.to_dict("records")}, default=str)
        except RequestError as exc:
            status, text = 400, json.dumps({"error_code": "INVALID_PARAMETER_VALUE",
                                            "message": str(exc)})
        except Busy as exc:
            status, text = 503, json.dumps({"error_code": "TEMPORARILY_UNAVAILABLE",
                                            "message": str(exc)})
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": text.encode()})


def recording(seconds: float) -> str:
    import io

    buf = io.BytesIO()
    sf.write(buf, np.concatenate([tone(TONES["low"], seconds / 2), tone(TONES["high"],
                                                                        seconds / 2)]), SR,
             format="FLAC")
    return base64.b64encode(buf.getvalue()).decode()


def windowed(clip: str, window: float = 0.5, hop: float = 0.1) -> bytes:
    return json.dumps({"dataframe_split": {"columns": ["audio"], "data": [[clip]]},
                       "params": {"window_seconds": window, "hop_seconds": hop}}).encode()


def test_a_timed_out_request_stops_its_windows_and_frees_its_admission():
    """Round 3: a windowed request answered 503 at 60 s kept computing ~125 s more."""
    from fsd.inference.windows import WINDOW_BATCH

    ens = SlowBand(config(), delay=0.2)
    front = Front(Scoring(ens), timeout_s=0.6)
    body = windowed(recording(30.0))  # 296 windows: 10 batches, 2 s of scoring
    status, answer = call(front, body)
    assert status == 503 and b"longer than 0.6 s" in answer
    assert wait_idle(IN_FLIGHT, timeout=2.0)  # stopped at the next batch, admission freed
    batches = len(ens.calls)
    time.sleep(0.6)
    assert len(ens.calls) == batches  # nothing more after the stop
    assert batches * WINDOW_BATCH < 296 / 2, batches  # stopped while decoding or scoring


def test_past_the_ceiling_new_work_is_a_503_at_once():
    # ~17 window batches: the first request stays in flight ~2.5 s, past the 503's 1 s
    ens = SlowBand(config(), delay=0.15)
    ens.info.max_request_frames = 30_000  # the ceiling: one such request (19,600) in flight
    front = Front(Scoring(ens), timeout_s=20)
    first: list = []
    t = threading.Thread(target=lambda: first.append(call(front, windowed(recording(20.0)))))
    t.start()
    deadline = time.monotonic() + 5
    while IN_FLIGHT.requests == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.monotonic()
    status, answer = call(front, windowed(recording(20.0)))
    took = time.monotonic() - t0
    assert status == 503 and b"busy" in answer and took < 1.0, (status, answer, took)
    t.join()
    assert first[0][0] == 200
    assert wait_idle(IN_FLIGHT, timeout=1.0)
    # with nothing in flight the same request is admitted
    assert call(front, windowed(recording(20.0)))[0] == 200


def test_forward_passes_take_turns_in_arrival_order():
    """A long request releasing the lock between batches must not take it straight back
    while a short one waits (with threading.Lock, valid clips waited 55 s behind windows)."""
    from fsd.inference.inflight import TurnLock

    lock, order = TurnLock(), []

    def long_request():
        for i in range(5):
            with lock:
                order.append(f"long{i}")
                time.sleep(0.05)

    def short_request():
        with lock:
            order.append("short")

    t = threading.Thread(target=long_request)
    t.start()
    time.sleep(0.02)  # the long request holds its first turn
    s = threading.Thread(target=short_request)
    s.start()
    t.join()
    s.join()
    assert order.index("short") <= 2, order
