"""Two attacks on ``fsd serve`` from issue 25, each measured against valid 5 s requests.

``--attack windows`` (item 3): three clients each send a windowed request over a 10-minute
FLAC (5 s windows every 0.45 s: 1,323 windows, inside the model's work bound) and send it
again as soon as it is answered (after ``--retry-after`` s when it was refused at once),
while 2 valid clients send 5 s clips. Before the fix each
such request ran to the end after its 503 and three answered every valid client with 503 for
minutes. Passes when the valid requests' p95 stays <= 3x their idle p95 (measured first, same
server) and every valid request is answered 200.

``--attack tricklers`` (item 4): 64 connections that send a request a byte at a time, each
reopened as soon as it closes, while valid clients send 28 requests. Passes when >= 90% of
the valid requests are answered 200.

The model is load_serve.py's tiny ensemble (trained once into ``--workdir``). Not a test::

    nice -n 10 .venv/bin/python benchmarks/attack_serve.py --attack windows
    nice -n 10 .venv/bin/python benchmarks/attack_serve.py --attack tricklers
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "support"))
sys.path.insert(0, str(REPO / "benchmarks"))

from hostile_payloads import trickle  # noqa: E402
from load_serve import JSON, build_tiny_model, post, split, wav  # noqa: E402


def long_flac(minutes: float = 10.0, sr: int = 8000) -> bytes:
    """``minutes`` of 0.2 s tone bursts every second over digital silence (FLAC packs it under
    a megabyte; every 5 s window holds sound, so every window is scored)."""
    n = int(minutes * 60 * sr)
    y = np.zeros(n, np.float32)
    t = np.arange(int(0.2 * sr)) / sr
    burst = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for start in range(0, n - len(burst), sr):
        y[start:start + len(burst)] = burst
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def p95(values: list[float]) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(0.95 * len(v)))] if v else float("nan")


def valid_round(port: int, bodies: list[bytes], clients: int, n: int,
                timeout: float) -> list[tuple[int, float]]:
    """``n`` valid requests from ``clients`` threads: (status, seconds) each."""
    out: list[tuple[int, float]] = []
    lock = threading.Lock()
    left = list(range(n))

    def client():
        while True:
            with lock:
                if not left:
                    return
                i = left.pop()
            _, status, secs, _ = post(port, bodies[i % len(bodies)], JSON, timeout)
            with lock:
                out.append((status, secs))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def attack_windows(port: int, args) -> bool:
    flac = long_flac()
    attack = split([[base64.b64encode(flac).decode()]],
                   params={"window_seconds": 5.0, "hop_seconds": 0.45})
    print(f"attack body: 10-min FLAC {len(flac):,} B, 1,323 windows of 5 s every 0.45 s")
    goods = [split([[base64.b64encode(wav(5.0, seed=i)).decode()]]) for i in range(4)]
    idle = valid_round(port, goods, 2, args.valid, args.timeout)
    idle_p95 = p95([s for st, s in idle if st == 200])
    stop = threading.Event()
    answers: Counter = Counter()

    def attacker():
        while not stop.is_set():
            _, status, secs, _ = post(port, attack, JSON, args.timeout)
            answers[status] += 1
            if status == 503 and secs < 1.0:  # refused at once: back off as Retry-After says
                stop.wait(args.retry_after)

    attackers = [threading.Thread(target=attacker, daemon=True) for _ in range(3)]
    for t in attackers:
        t.start()
    time.sleep(args.attack_head_start)  # the attack requests are admitted and running
    under = valid_round(port, goods, 2, args.valid, args.timeout)
    stop.set()
    for t in attackers:
        t.join(timeout=args.timeout + 5)
    ok_lat = [s for st, s in under if st == 200]
    under_p95 = p95(ok_lat)
    statuses = Counter(st for st, _ in under)
    print(f"valid 5 s requests idle: {len(idle)}, p50 {statistics.median([s for _, s in idle]):.2f}"
          f" s, p95 {idle_p95:.2f} s")
    print(f"valid 5 s requests under 3 windowed attackers: {dict(statuses)}, p50 "
          f"{statistics.median(ok_lat) if ok_lat else float('nan'):.2f} s, p95 {under_p95:.2f} s "
          f"({under_p95 / idle_p95:.2f}x idle)")
    print(f"attack answers: {dict(answers)}")
    print("valid under attack (status, s): "
          + ", ".join(f"{st} {secs:.1f}" for st, secs in sorted(under, key=lambda x: x[1])))
    return statuses.get(200, 0) == len(under) and under_p95 <= 3 * idle_p95


def attack_tricklers(port: int, args) -> bool:
    goods = [split([[base64.b64encode(wav(5.0, seed=i)).decode()]]) for i in range(4)]
    stop = threading.Event()
    body = goods[0]
    head = (f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    threads = [threading.Thread(target=trickle, args=(port, stop, head), daemon=True)
               for _ in range(args.tricklers)]
    for t in threads:
        t.start()
    time.sleep(3.0)
    under = valid_round(port, goods, 4, args.valid_tricklers, args.timeout)
    stop.set()
    served = sum(1 for st, _ in under if st == 200)
    print(f"{args.tricklers} tricklers: {served} of {len(under)} valid requests served "
          f"({Counter(st for st, _ in under)})")
    return served >= 0.9 * len(under)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attack", choices=("windows", "tricklers"), required=True)
    ap.add_argument("--workdir", default="/tmp/fsd-load")
    ap.add_argument("--valid", type=int, default=40, help="valid requests per round")
    ap.add_argument("--valid-tricklers", type=int, default=28)
    ap.add_argument("--tricklers", type=int, default=64)
    ap.add_argument("--timeout", type=float, default=90.0, help="client timeout, s")
    ap.add_argument("--server-timeout", type=int, default=60)
    ap.add_argument("--attack-head-start", type=float, default=5.0)
    ap.add_argument("--retry-after", type=float, default=2.0,
                    help="seconds an attacker waits after an immediate 503 (0: hammer)")
    ap.add_argument("--serve-args", default="", help="extra fsd serve arguments")
    args = ap.parse_args(argv)

    from local_server import LocalServer

    os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
    # the tiny model's artifacts under --workdir, not ./mlruns of the checkout
    os.environ.setdefault("_MLFLOW_SERVER_ARTIFACT_ROOT", str(Path(args.workdir) / "artifacts"))
    uri, model_uri = build_tiny_model(Path(args.workdir))
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    with LocalServer(model_uri, front=True, env=env, start_timeout=300,
                     request_timeout=args.server_timeout,
                     log_path=Path(args.workdir) / "attack-server.log",
                     serve_args=args.serve_args.split()) as srv:
        warm = split([[base64.b64encode(wav(5.0)).decode()]])
        for _ in range(4):
            post(srv.port, warm, JSON, args.timeout)
        ok = attack_windows(srv.port, args) if args.attack == "windows" else \
            attack_tricklers(srv.port, args)
    print("PASS" if ok else "FAIL")
    print(json.dumps({"attack": args.attack, "pass": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
