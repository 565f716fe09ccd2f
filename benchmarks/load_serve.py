"""A bounded load test of ``fsd serve`` on 127.0.0.1 with hostile traffic mixed in.

1,000 requests (``--requests``) from 8 concurrent clients (``--clients``), ~10% of them
malformed across the kinds in :data:`KINDS` (invalid JSON, wrong and extra columns, not
base64, random bytes, empty bodies and clips, a truncated WAV, a WAV whose header lies, 0.05 s,
60 s, stereo 96 kHz 24-bit, a 20 MB body, too many clips, too-costly params, an unknown param,
wrong and missing Content-Type; issue 19: a parquet body of 200 MiB of zstd zeros, a FLAC
of 59 s x 8 channels at 655 kHz, requests that try to get their text echoed) and, beside the
load, slow clients (idle connections, headers sent a byte a second). Passes when there are
0 5xx answers, 0 timeouts and 0 connection errors, every malformed kind gets its expected
class of answer, no answer quotes a request, every slow client is closed by the server, the
server's peak RSS (sampled every 20 ms) stays within +600 MB of its post-warm-up level, and
its RSS at the end within 20% of it. Prints p50/p95 of the good requests.

The model is the tests' tiny ensemble (tests/support/conftest_ensemble.py: 2 folds, 2 lengths x 2
crops), trained once into ``--workdir`` (about a minute) and reused, or any ``--model`` URI
with ``MLFLOW_TRACKING_URI`` set. Not a test: it takes minutes; run it by hand::

    nice -n 19 .venv/bin/python benchmarks/load_serve.py --workdir /tmp/fsd-load
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.client
import io
import json
import os
import random
import socket
import statistics
import struct
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "support"))

import hostile_payloads as crafted  # noqa: E402
from hostile_payloads import flac_bomb, parquet_bomb, rss_mb  # noqa: E402

PARQUET = "application/vnd.apache.parquet"

# --- the model -------------------------------------------------------------------------------


def build_tiny_model(workdir: Path) -> tuple[str, str]:
    """Train the tests' tiny ensemble into ``workdir`` once; returns (tracking URI, model URI)."""
    from conftest_ensemble import MODEL_NAME, make_kaggle_layout, tiny_config, tracking_at

    workdir.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{workdir}/mlflow.db"
    model_uri = f"models:/{MODEL_NAME}@champion"
    marker = workdir / "model_ready"
    if marker.exists():
        return uri, model_uri
    from fsd import tracking
    from fsd.entrypoints.ensemble import build_ensemble
    from fsd.entrypoints.featurize import featurize_logged, resolve_store
    from fsd.entrypoints.train_fold import train_fold_logged
    from fsd.train import fit

    data_root = make_kaggle_layout(workdir / "data", workdir / "cache")
    cfg = tiny_config(workdir, data_root)
    with tracking_at(uri):
        with tracking.stage_run(cfg, "featurize"):
            featurize_logged(cfg)
        store, features_run = resolve_store(cfg)
        orig = fit.train_fold
        fit.train_fold = functools.partial(orig, run_eagerly=True)
        try:
            for fold in range(cfg.folds.n_folds):
                cfg.train.fold = fold
                train_fold_logged(cfg, store, features_run)
        finally:
            fit.train_fold = orig
        cfg.train.fold = 0
        build_ensemble(cfg, None, register=True)
    marker.write_text(model_uri)
    return uri, model_uri


# --- requests --------------------------------------------------------------------------------


def wav(seconds: float, sr: int = 44100, channels: int = 1, subtype: str = "PCM_16",
        seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = 0.3 * np.sin(2 * np.pi * (200 + 150 * (seed % 7)) * t) * np.exp(-t / max(seconds, 0.1))
    y = y + 0.03 * rng.standard_normal(len(t))
    y = np.repeat(y[:, None], channels, axis=1)
    buf = io.BytesIO()
    sf.write(buf, y.astype(np.float32), sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def lying_header(seconds: float = 0.5) -> bytes:
    """A WAV whose header claims 8 channels at 4 GHz and 4 GB of data over 1 s of samples."""
    data = wav(seconds)
    fmt = struct.pack("<HHIIHH", 1, 8, 4_000_000_000, 4_000_000_000, 16, 16)
    return (b"RIFF" + struct.pack("<I", 0xFFFFFFF0) + b"WAVE" + b"fmt " + struct.pack("<I", 16)
            + fmt + b"data" + struct.pack("<I", 0xFFFFFFF0) + data[44:])


SECRET = "ZZSECRET <script>alert(1)</script>"


def split(rows, cols=("audio",), params=None) -> bytes:
    doc = {"dataframe_split": {"columns": list(cols), "data": rows}}
    if params:
        doc["params"] = params
    return json.dumps(doc).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


JSON = "application/json"


def make_kinds() -> dict[str, tuple[bytes, str | None, str]]:
    """name -> (body, Content-Type or None for none, expected answer: '4xx' or '2xx')."""
    rng = np.random.default_rng(7)
    good = b64(wav(1.0))
    cut = wav(2.0)
    return {
        "invalid JSON": (b'{"dataframe_split": {"columns": ["audio"], "data": [["', JSON, "4xx"),
        "wrong column": (split([[good]], cols=("sound",)), JSON, "4xx"),
        "extra column": (split([[good, 1]], cols=("audio", "x")), JSON, "4xx"),
        "not base64": (split([["@@@ not base64 @@@"]]), JSON, "4xx"),
        "random bytes clip": (split([[b64(rng.bytes(5000))]]), JSON, "4xx"),
        "random bytes body": (rng.bytes(5000), JSON, "4xx"),
        "empty body": (b"", JSON, "4xx"),
        "empty clip": (split([[""]]), JSON, "4xx"),
        # the present part of a cut-off WAV is real audio: served (featurize warns about it)
        "truncated WAV": (split([[b64(cut[: len(cut) // 3])]]), JSON, "2xx"),
        "lying header": (split([[b64(lying_header())]]), JSON, "4xx"),
        "0.04 s clip": (split([[b64(wav(0.04))]]), JSON, "4xx"),  # < audio.min_seconds
        "0.05 s clip": (split([[b64(wav(0.05))]]), JSON, "2xx"),  # = audio.min_seconds: kept
        # 60 s of 16-bit 44.1 kHz is 5.3 MB > the tiny model's ensemble.max_clip_bytes (2 MB)
        "60 s clip": (split([[b64(wav(60.0))]]), JSON, "4xx"),
        "61 s clip": (split([[b64(wav(61.0))]]), JSON, "4xx"),  # > audio.max_seconds
        "stereo 96 kHz 24-bit": (split([[b64(wav(2.0, sr=96000, channels=2, subtype="PCM_24"))]]),
                                 JSON, "2xx"),
        "20 MB body": (split([[b64(rng.bytes(15_000_000))]]), JSON, "4xx"),
        "too many clips": (split([[good]] * 5), JSON, "4xx"),
        "too-costly params": (split([[good]], params={"tta_lengths": [4000] * 16,
                                                      "tta_crops": 32}), JSON, "4xx"),
        "unknown param": (split([[good]], params={"tta_crop": 3}), JSON, "4xx"),
        "wrong Content-Type": (split([[good]]), "text/plain", "4xx"),
        "no Content-Type": (split([[good]]), None, "4xx"),
        # issue 19: compressed bombs and requests that try to get their text echoed
        "parquet bomb (200 MiB)": (parquet_bomb(), "application/vnd.apache.parquet", "4xx"),
        "FLAC bomb (1.24 GB)": (split([[b64(flac_bomb())]]), JSON, "4xx"),
        # issue 25: parquet bodies whose footer lies (page headers say 200 MiB / 2 GiB), whose
        # page headers lie (1 KB claimed, 200 MiB of zstd data), 5M null rows (honest, 12 KB)
        "parquet bomb, lying footer (200 MiB)": (crafted.parquet_lying_footer(200), PARQUET, "4xx"),
        "parquet bomb, lying footer (2,000 MiB)": (crafted.parquet_lying_footer(2000), PARQUET, "4xx"),
        "parquet bomb, lying page header": (crafted.parquet_lying_page(200), PARQUET, "4xx"),
        "parquet bomb, 5M null rows": (crafted.parquet_many_nulls(5_000_000), PARQUET, "4xx"),
        "echo: inputs string": (json.dumps({"inputs": SECRET}).encode(), JSON, "4xx"),
        "echo: records strings": (json.dumps({"dataframe_records": [SECRET]}).encode(), JSON,
                                  "4xx"),
        "echo: split no columns": (json.dumps({"dataframe_split": {"data": [[SECRET]]}}).encode(),
                                   JSON, "4xx"),
        "echo: string params": (split([[good]], params={"top_k": SECRET,
                                                        "tta_lengths": [SECRET]}), JSON, "4xx"),
    }


def good_bodies(n: int = 12) -> list[bytes]:
    """Good requests: 1-2 clips of 0.5-4 s, default params or a cheap override."""
    out = []
    for i in range(n):
        clips = [b64(wav(0.5 + (i * 0.3) % 3.5, seed=i))] * (1 + i % 2)
        out.append(split([[c] for c in clips], params={"top_k": 2} if i % 3 == 0 else None))
    return out


# --- the client --------------------------------------------------------------------------------


MESSAGES: dict[int, str] = {}  # id(body) -> the first error message it got


def post(port: int, body: bytes, content_type: str | None, timeout: float) -> tuple[str, int, float, int]:
    """One request on a fresh connection: (outcome, status, seconds, answer bytes)."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest("POST", "/invocations", skip_accept_encoding=True)
        if content_type is not None:
            conn.putheader("Content-Type", content_type)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        conn.send(body)
        resp = conn.getresponse()
        answer = resp.read()
        if resp.status >= 400 and id(body) not in MESSAGES:
            try:
                MESSAGES[id(body)] = json.loads(answer).get("message", "")
            except ValueError:
                MESSAGES[id(body)] = answer[:200].decode(errors="replace")
        return "ok", resp.status, time.perf_counter() - t0, len(answer)
    except (socket.timeout, TimeoutError):
        return "timeout", 0, time.perf_counter() - t0, 0
    except (ConnectionError, http.client.HTTPException, OSError) as exc:
        return f"connection error ({type(exc).__name__})", 0, time.perf_counter() - t0, 0
    finally:
        conn.close()


def slow_client(port: int, mode: str, limit: float = 60.0) -> float:
    """An idle connection (``idle``) or one sending its headers a byte a second (``header``);
    seconds until the server closes it (inf: not within ``limit``)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=1.0)
    t0 = time.monotonic()
    try:
        if mode == "header":
            sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\n")
        next_byte = t0 + 1.0
        while time.monotonic() - t0 < limit:
            if mode == "header" and time.monotonic() >= next_byte:
                try:
                    sock.sendall(b"X")
                except OSError:
                    return time.monotonic() - t0
                next_byte += 1.0
            try:
                if sock.recv(4096) == b"":
                    return time.monotonic() - t0
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return time.monotonic() - t0
        return float("inf")
    finally:
        sock.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="/tmp/fsd-load", help="where the tiny model lives")
    ap.add_argument("--model", default="", help="model URI (default: the tiny test ensemble)")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--malformed", type=float, default=0.10)
    ap.add_argument("--timeout", type=float, default=60.0, help="client timeout per request, s")
    ap.add_argument("--server-timeout", type=float, default=30.0)
    ap.add_argument("--max-body-bytes", type=int, default=16 * 2**20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--slow-clients", type=int, default=4,
                    help="idle and slow-header connections each, held beside the load")
    args = ap.parse_args(argv)

    os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
    if args.model:
        model_uri, env = args.model, dict(os.environ)
    else:
        uri, model_uri = build_tiny_model(Path(args.workdir))
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    from local_server import LocalServer

    kinds = make_kinds()
    goods = good_bodies()
    rnd = random.Random(args.seed)
    n_bad = int(round(args.requests * args.malformed))
    names = list(kinds)
    # every kind at least once, the rest of the malformed share dealt round-robin
    plan = [("bad", names[i % len(names)]) for i in range(n_bad)]
    plan += [("good", i % len(goods)) for i in range(args.requests - n_bad)]
    rnd.shuffle(plan)

    log_path = Path(args.workdir) / "server.log"
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    with LocalServer(model_uri, front=True, env=env, start_timeout=300,
                     request_timeout=int(args.server_timeout), log_path=log_path,
                     serve_args=["--max-body-bytes", str(args.max_body_bytes)]) as srv:
        pid, port = srv.pid, srv.port
        # warm-up: every good body once, every kind but the bombs once (TF traces each shape
        # on first use; a bomb's cost must show against the post-warm-up level)
        for body in goods:
            post(port, body, JSON, args.timeout)
        for name, (body, ctype, _) in kinds.items():
            if "bomb" not in name:
                post(port, body, ctype, args.timeout)
        for body in goods:
            post(port, body, JSON, args.timeout)
        rss_warm = rss_mb(pid)
        print(f"server pid {pid} on 127.0.0.1:{port}; RSS after warm-up {rss_warm:.0f} MB")

        results: list[tuple[str, object, str, int, float, int]] = []
        lock = threading.Lock()
        queue = list(enumerate(plan))
        rss_peak = [rss_warm]
        done = threading.Event()

        def sample_rss():
            while not done.wait(0.02):
                try:
                    rss_peak[0] = max(rss_peak[0], rss_mb(pid))
                except (OSError, ValueError):
                    return

        slow_times: list[tuple[str, float]] = []

        def slow(mode: str):
            slow_times.append((mode, slow_client(port, mode)))

        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()
        slow_threads = [threading.Thread(target=slow, args=(m,), daemon=True)
                        for m in ["idle", "header"] * args.slow_clients]
        for t in slow_threads:
            t.start()

        def client():
            while True:
                with lock:
                    if not queue:
                        return
                    _, (what, which) = queue.pop()
                if what == "good":
                    body, ctype = goods[which], JSON
                else:
                    body, ctype, _ = kinds[which]
                outcome, status, secs, size = post(port, body, ctype, args.timeout)
                with lock:
                    results.append((what, which, outcome, status, secs, size))
                    if len(results) % 50 == 0:
                        rss_peak[0] = max(rss_peak[0], rss_mb(pid))

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for t in slow_threads:
            t.join(timeout=70)
        wall = time.perf_counter() - t0
        time.sleep(2.0)
        done.set()
        rss_end = rss_mb(pid)

    good = [r for r in results if r[0] == "good"]
    bad = [r for r in results if r[0] == "bad"]
    outcomes = Counter(r[2] for r in results)
    n5xx = sum(1 for r in results if r[3] >= 500)
    timeouts = outcomes.get("timeout", 0)
    conn_errors = sum(v for k, v in outcomes.items() if k.startswith("connection"))
    lat = sorted(r[4] for r in good if r[2] == "ok" and r[3] == 200)
    good_fail = sum(1 for r in good if r[3] != 200)
    by_kind: dict[str, Counter] = defaultdict(Counter)
    sizes: dict[str, int] = defaultdict(int)
    for r in bad:
        by_kind[r[1]][r[3]] += 1
        sizes[r[1]] = max(sizes[r[1]], r[5])
    wrong_class = []
    for name, counts in by_kind.items():
        want = kinds[name][2]
        for status in counts:
            if (want == "4xx" and not 400 <= status < 500) or (want == "2xx" and status != 200):
                wrong_class.append((name, status))

    print(f"\n{len(results)} requests ({len(good)} good, {len(bad)} malformed over "
          f"{len(by_kind)} kinds) from {args.clients} clients in {wall:.0f} s")
    print(f"{'kind':<24} {'n':>3}  {'statuses':<9} {'bytes':>5}  message")
    for name in kinds:
        c = by_kind.get(name, Counter())
        msg = MESSAGES.get(id(kinds[name][0]), "")
        print(f"{name:<24} {sum(c.values()):>3}  "
              f"{', '.join(f'{s}x{n}' for s, n in sorted(c.items())):<9} {sizes.get(name, 0):>5}  "
              f"{msg[:90]}")
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")  # noqa: E731
    print(f"\ngood requests: {len(lat)} x 200, {good_fail} not 200; latency p50 "
          f"{1000 * statistics.median(lat) if lat else float('nan'):.0f} ms, "
          f"p95 {1000 * p(0.95):.0f} ms, max {1000 * (lat[-1] if lat else float('nan')):.0f} ms")
    print(f"5xx: {n5xx}; timeouts: {timeouts}; connection errors: {conn_errors}")
    growth = rss_end / rss_warm - 1
    peak_growth = rss_peak[0] - rss_warm
    print(f"server RSS: {rss_warm:.0f} MB after warm-up, peak {rss_peak[0]:.0f} MB "
          f"({peak_growth:+.0f} MB; sampled every 20 ms), {rss_end:.0f} MB at the end "
          f"({100 * growth:+.1f}%)")
    echoed = [name for name, msg in ((n, MESSAGES.get(id(kinds[n][0]), "")) for n in kinds)
              if "ZZSECRET" in msg or "script" in msg]
    slow_open = [(m, t) for m, t in slow_times if not t < 30]
    print(f"slow clients: {len(slow_times)} closed by the server after "
          + ", ".join(f"{m} {t:.1f} s" for m, t in sorted(slow_times)[:8])
          + (f"; NOT closed: {slow_open}" if slow_open else ""))
    if echoed:
        print("answers quoting the request:", echoed)
    ok = (n5xx == 0 and timeouts == 0 and conn_errors == 0 and good_fail == 0
          and not wrong_class and abs(growth) <= 0.20 and len(by_kind) >= 12
          and peak_growth <= 600 and not echoed and not slow_open
          and len(slow_times) == 2 * args.slow_clients)
    if wrong_class:
        print("unexpected answers:", wrong_class)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
