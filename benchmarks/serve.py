"""Ensemble inference speed: batched TTA vs a naive loop vs the raw forward pass, and the served
model's latency and throughput.

Part 1 (in process): K fold models (tiny, random weights) x L lengths x C crops over a set of
clips. ``batched`` is :func:`fsd.model.tta.predict_ensemble` (crops of all clips grouped by
length, one tensor per length, every fold over it in large batches); ``naive`` is one predict
call per crop per fold per clip; ``raw`` is only the fold models' forward passes over the very
same view tensors, already built (the ceiling). Target: batched >= 0.8 of raw.

Part 2 (served): the same ensemble logged as the pyfunc, registered in a temporary sqlite
tracking store, served by a real ``mlflow models serve --env-manager local`` on 127.0.0.1.
Latency p50/p95 of one 5 s clip per request, then throughput with 8 concurrent clients.
Every request is bounded by a timeout and the server is always stopped.

Part 4 (in process, side by side): the same registered ensemble and a registered student
(one log-mel network, summary features off, as ``fsd distill`` registers it) through the
pyfunc's request path: p50/p95 and clips/s of one 5 s clip a request, interleaved; then a
recording window by window (``--recording-seconds 3600`` for the issue's 60 minutes).

Part 3 (in process, side by side): the same registered ensemble as the MLflow pyfunc
(``mlflow.pyfunc.load_model``, TensorFlow) and exported to ONNX (``fsd export``) run by
onnxruntime (:class:`fsd.export.predictor.ExportedModel` through the very same request path:
decode, features, TTA, top-k), requests interleaved: latency p50/p95 and clips/s of one 5 s
clip per request, one client; then one 60 s recording tagged window by window
(``window_seconds`` 5, ``hop_seconds`` 2.5) by each.

    .venv/bin/python benchmarks/serve.py                # all parts, defaults below
    .venv/bin/python benchmarks/serve.py --skip-serve   # parts 1 and 3
    .venv/bin/python benchmarks/serve.py --skip-tta --skip-serve   # part 3 only
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--folds", type=int, default=2)
    p.add_argument("--lengths", type=int, default=6, help="TTA lengths (equally spaced)")
    p.add_argument("--crop-min", type=int, default=100, help="shortest TTA length (frames)")
    p.add_argument("--crop-max", type=int, default=300, help="longest TTA length (frames)")
    p.add_argument("--crops", type=int, default=5, help="random crops per length")
    p.add_argument("--clips", type=int, default=24, help="clips in part 1")
    p.add_argument("--classes", type=int, default=41)
    p.add_argument("--pca", type=int, default=16, help="PCA components (model input)")
    p.add_argument("--width", type=float, default=0.35, help="MobileNetV2 width")
    p.add_argument("--dense1", type=int, default=32)
    p.add_argument("--dense2", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (best is reported)")
    p.add_argument("--naive-clips", type=int, default=6,
                   help="clips timed for the naive loop (it is slow; clips/s is extrapolated)")
    p.add_argument("--skip-serve", action="store_true", help="part 1 only")
    p.add_argument("--clip-seconds", type=float, default=5.0)
    p.add_argument("--latency-requests", type=int, default=20)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--requests-per-client", type=int, default=3)
    p.add_argument("--skip-tta", action="store_true", help="no part 1")
    p.add_argument("--skip-export", action="store_true", help="no part 3")
    p.add_argument("--export-requests", type=int, default=20,
                   help="part 3: requests per model (interleaved)")
    p.add_argument("--recording-seconds", type=float, default=60.0,
                   help="part 3: the recording tagged window by window")
    p.add_argument("--skip-student", action="store_true", help="no part 4")
    p.add_argument("--student-width", type=float, default=0.35,
                   help="part 4: the student network's width")
    p.add_argument("--student-lengths", type=int, default=2, help="part 4: student TTA lengths")
    p.add_argument("--student-crops", type=int, default=1, help="part 4: student crops a length")
    p.add_argument("--served-student", action="store_true",
                   help="part 5: the ensemble and the student each behind `fsd serve`")
    p.add_argument("--predict-recording-seconds", type=float, default=0.0, metavar="S",
                   help="part 5: also `fsd predict --window 5 --hop 2.5` a recording of S s "
                        "with the student (3600: the issue's 60 minutes)")
    p.add_argument("--json", default="", help="also write the figures to this JSON file")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- part 1


def make_models(args):
    from fsd.config import ModelConfig
    from fsd.model.networks import build_network

    mc = ModelConfig(width=args.width, dense1=args.dense1, dense2=args.dense2)
    return [build_network(mc, args.classes, 64, args.pca) for _ in range(args.folds)]


def make_clips(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    # FSDKaggle2018-like spread: many short clips, some longer than the longest crop
    frames = np.clip(rng.lognormal(np.log(350), 0.7, n), 40, 3000).astype(int)
    return [rng.random((f, 64), dtype=np.float32) for f in frames]


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_tta(args) -> dict:
    from fsd.model import tta
    from fsd.model.tta import build_views, crop_positions, predict_ensemble

    models = make_models(args)
    clips = make_clips(args.clips)
    rng = np.random.default_rng(1)
    pcas = [rng.normal(size=(len(clips), args.pca)).astype(np.float32) for _ in models]
    lengths = sorted({int(round(v)) for v in np.linspace(args.crop_min, args.crop_max, args.lengths)})
    crops, bs = args.crops, args.batch_size

    def batched():
        return predict_ensemble(models, clips, pcas, lengths, crops, seed=0, batch_size=bs)

    # the same tensors the batched path builds, prepared outside the timer
    pos = crop_positions(clips, lengths, crops, 0)
    views = {L: build_views(clips, L, pos[i]) for i, L in enumerate(lengths)}
    pca_rep = [np.repeat(p, crops, axis=0) for p in pcas]

    def raw():
        for m, p in zip(models, pca_rep):
            for L in lengths:
                x = views[L]
                for s in range(0, len(x), bs):
                    m.predict_on_batch([x[s:s + bs], p[s:s + bs]])

    sub = clips[:args.naive_clips]

    def naive():
        for m, p in zip(models, pcas):
            for i, clip in enumerate(sub):
                for li, L in enumerate(lengths):
                    for c in range(crops):
                        x = build_views([clip], L, pos[li, i:i + 1, c:c + 1])
                        m.predict_on_batch([x, p[i:i + 1]])

    batched()  # warm-up: traces the predict step for every shape
    raw()
    naive()
    # interleaved, best of each: on a shared machine the load drifts between runs
    t_batched = t_raw = float("inf")
    forward = [0.0]
    real_forward = tta._forward

    def timed_forward(*a, **k):
        t0 = time.perf_counter()
        out = real_forward(*a, **k)
        forward[0] += time.perf_counter() - t0
        return out

    share = 0.0
    for _ in range(args.repeats):
        forward[0] = 0.0
        tta._forward = timed_forward
        try:
            t = best_of(1, batched)
        finally:
            tta._forward = real_forward
        if t < t_batched:
            t_batched, share = t, forward[0] / t
        t_raw = min(t_raw, best_of(1, raw))
    t_naive = best_of(max(1, args.repeats - 1), naive)
    n = len(clips)
    out = {
        "folds": len(models), "lengths": lengths, "crops": crops, "clips": n,
        "views_per_clip": len(models) * len(lengths) * crops,
        "batched_clips_per_s": n / t_batched,
        "raw_clips_per_s": n / t_raw,
        "naive_clips_per_s": len(sub) / t_naive,
    }
    out["batched_forward_share"] = share  # of the batched time, inside the models' forward
    out["batched_over_raw"] = out["batched_clips_per_s"] / out["raw_clips_per_s"]
    out["batched_over_naive"] = out["batched_clips_per_s"] / out["naive_clips_per_s"]
    return out


# --------------------------------------------------------------------------- part 2


def build_served_model(args, root: Path) -> str:
    """Save the tiny fold models + fitted projectors as a bundle, log and register it."""
    import mlflow

    from fsd.config import Config
    from fsd.ensemble.bundle import BundleInfo, FoldFiles, build_bundle
    from fsd.features.projection import SummaryProjector
    from fsd.serving.pyfunc import log_ensemble_model
    from fsd.serving.registry import register_and_promote

    cfg = Config()
    cfg.model.width, cfg.model.dense1, cfg.model.dense2 = args.width, args.dense1, args.dense2
    cfg.pca.n_components = args.pca
    rng = np.random.default_rng(0)
    files = []
    for k, m in enumerate(make_models(args)):
        d = root / f"fold_{k}"
        d.mkdir(parents=True)
        m.save(d / "model.keras")
        proj = SummaryProjector.from_config(cfg.pca).fit(rng.normal(size=(64, 1133)).astype(np.float32))
        proj.save(d / "projector.joblib")
        files.append(FoldFiles(fold=k, model=d / "model.keras", projector=d / "projector.joblib"))
    lengths = sorted({int(round(v)) for v in np.linspace(args.crop_min, args.crop_max, args.lengths)})
    labels = [f"class_{i:02d}" for i in range(args.classes)]
    info = BundleInfo(labels=labels, tta_lengths=lengths, tta_crops=args.crops, seed=0, top_k=3,
                      batch_size=args.batch_size, crop_min=args.crop_min, crop_max=args.crop_max,
                      prior=[1.0 / args.classes] * args.classes, max_request_clips=64,
                      max_clip_bytes=20_000_000)
    bundle = build_bundle(root / "bundle", files, cfg, info)
    mlflow.set_experiment("serve-benchmark")
    with mlflow.start_run():
        model_info = log_ensemble_model(bundle, info)
        mlflow.log_metric("oof_map3", 0.5)
    register_and_promote(model_info.model_uri, "bench-ensemble", "champion", 0.5)
    return "models:/bench-ensemble@champion"


def clip_wav(seconds: float, seed: int = 0) -> bytes:
    import io

    import soundfile as sf

    rng = np.random.default_rng(seed)
    sr = 44100
    t = np.arange(int(seconds * sr)) / sr
    y = 0.3 * np.sin(2 * np.pi * (220 + 40 * np.sin(2 * np.pi * 0.5 * t)) * t)
    y += 0.05 * rng.standard_normal(len(t))
    buf = io.BytesIO()
    sf.write(buf, y.astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def bench_serve(args) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))
    from local_server import LocalServer, audio_request

    tmp = Path(tempfile.mkdtemp(prefix="fsd-serve-bench-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
    uri = build_served_model(args, tmp)
    body = audio_request([clip_wav(args.clip_seconds)])
    with LocalServer(uri, start_timeout=300, request_timeout=120, log_path=tmp / "server.log") as srv:
        status, out = srv.invoke(body)  # warm-up: traces every length
        if status != 200:
            raise RuntimeError(f"warm-up request failed ({status}): {out}")
        lat = []
        for _ in range(args.latency_requests):
            t0 = time.perf_counter()
            status, _ = srv.invoke(body, timeout=120)
            lat.append(time.perf_counter() - t0)
            assert status == 200, status
        results: list[tuple[int, float]] = []
        lock = threading.Lock()

        def client():
            for _ in range(args.requests_per_client):
                t0 = time.perf_counter()
                st, _ = srv.invoke(body, timeout=300)
                with lock:
                    results.append((st, time.perf_counter() - t0))

        threads = [threading.Thread(target=client) for _ in range(args.concurrency)]
        t0 = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=900)
        wall = time.perf_counter() - t0
    ok = [d for s, d in results if s == 200]
    conc = sorted(d for _, d in results)
    return {
        "clip_seconds": args.clip_seconds,
        "latency_p50_s": statistics.median(lat),
        "latency_p95_s": float(np.percentile(lat, 95)),
        "concurrency": args.concurrency,
        "requests": len(results), "ok": len(ok),
        "throughput_clips_per_s": len(ok) / wall,
        "concurrent_p50_s": statistics.median(conc) if conc else float("nan"),
        "concurrent_p95_s": float(np.percentile(conc, 95)) if conc else float("nan"),
    }


# --------------------------------------------------------------------------- part 3


def bench_export(args) -> dict:
    """The registered pyfunc against its ONNX export, one 5 s clip a request, interleaved;
    then a long recording window by window."""
    import mlflow
    import pandas as pd

    from fsd.export.predictor import ExportedModel
    from fsd.export.writer import export_ensemble
    from fsd.serving.pyfunc import ensemble_of
    from fsd.serving.requests import score_request

    tmp = Path(tempfile.mkdtemp(prefix="fsd-export-bench-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
    uri = build_served_model(args, tmp)
    registered = mlflow.pyfunc.load_model(uri)
    t0 = time.perf_counter()
    export_ensemble(ensemble_of(registered), tmp / "export", "onnx")
    export_s = time.perf_counter() - t0
    exported = ExportedModel.load(tmp / "export")
    frame = pd.DataFrame({"audio": [clip_wav(args.clip_seconds)]})
    runs = {"registered": lambda f, p=None: registered.predict(f, params=p),
            "exported": lambda f, p=None: score_request(exported, f, p)}
    a, b = runs["registered"](frame), runs["exported"](frame)  # warm-up: traces every length
    assert list(a["label_1"]) == list(b["label_1"]), (a, b)
    out = {"export_s": export_s, **interleaved(runs, args)}
    out["exported_over_registered"] = (out["exported"]["clips_per_s"]
                                       / out["registered"]["clips_per_s"])
    return out


def interleaved(runs: dict, args) -> dict:
    """Each of ``runs`` (name -> predict(frame, params)) on one clip a request, requests
    interleaved; then a long recording window by window (after a warm-up of its length)."""
    import pandas as pd

    frame = pd.DataFrame({"audio": [clip_wav(args.clip_seconds)]})
    for fn in runs.values():
        fn(frame)  # warm-up: traces every length
    lat: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.export_requests):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn(frame)
            lat[name].append(time.perf_counter() - t0)
    out: dict = {"clip_seconds": args.clip_seconds, "requests": args.export_requests}
    for name, times in lat.items():
        out[name] = {"p50_s": statistics.median(times),
                     "p95_s": float(np.percentile(times, 95)),
                     "clips_per_s": len(times) / sum(times)}
    rec = pd.DataFrame({"audio": [clip_wav(args.recording_seconds, seed=1)]})
    params = {"window_seconds": 5.0, "hop_seconds": 2.5}
    out["windows"] = {"recording_seconds": args.recording_seconds, **params}
    for name, fn in runs.items():
        fn(pd.DataFrame({"audio": [clip_wav(12.0, seed=2)]}), params)  # warm-up: the window
        t0 = time.perf_counter()
        table = fn(rec, params)
        dt = time.perf_counter() - t0
        out["windows"][name] = {"seconds": dt, "windows": len(table),
                                "windows_per_s": len(table) / dt,
                                "x_real_time": args.recording_seconds / dt}
    return out


# --------------------------------------------------------------------------- part 4


def build_student_model(args, root: Path) -> str:
    """One log-mel network (no PCA input) as a bundle whose config has the summary features
    off, as ``fsd distill`` registers a student; logged and registered beside the ensemble."""
    import mlflow

    from fsd.config import Config, ModelConfig
    from fsd.ensemble.bundle import BundleInfo, FoldFiles, build_bundle
    from fsd.model.networks import build_network
    from fsd.serving.pyfunc import log_ensemble_model
    from fsd.serving.registry import register_and_promote

    cfg = Config()
    cfg.summary.enabled = False
    cfg.model.width = args.student_width
    cfg.model.dense1, cfg.model.dense2 = args.dense1, args.dense2
    mc = ModelConfig(width=args.student_width, dense1=args.dense1, dense2=args.dense2)
    d = root / "student"
    d.mkdir(parents=True)
    build_network(mc, args.classes, 64, None).save(d / "model.keras")
    lengths = sorted({int(round(v)) for v in np.linspace(args.crop_min, args.crop_max,
                                                          args.student_lengths)})
    labels = [f"class_{i:02d}" for i in range(args.classes)]
    info = BundleInfo(labels=labels, tta_lengths=lengths, tta_crops=args.student_crops, seed=0,
                      top_k=3, batch_size=args.batch_size, crop_min=args.crop_min,
                      crop_max=args.crop_max, prior=[1.0 / args.classes] * args.classes,
                      max_request_clips=64, max_clip_bytes=20_000_000)
    bundle = build_bundle(root / "student-bundle", [FoldFiles(fold=0, model=d / "model.keras")],
                          cfg, info)
    with mlflow.start_run():
        model_info = log_ensemble_model(bundle, info, name="student")
        mlflow.log_metric("oof_map3", 0.5)
    register_and_promote(model_info.model_uri, "bench-ensemble-student", "champion", 0.5)
    return "models:/bench-ensemble-student@champion"


def bench_student(args) -> dict:
    """The registered ensemble against a registered student (part 4), in one process through
    the pyfunc's request path (decode, features, TTA, top-k), requests interleaved."""
    import mlflow

    tmp = Path(tempfile.mkdtemp(prefix="fsd-student-bench-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
    # artifacts under tmp too (a new sqlite store puts them in ./mlruns of the working dir)
    mlflow.create_experiment("serve-benchmark", artifact_location=(tmp / "artifacts").as_uri())
    ensemble = mlflow.pyfunc.load_model(build_served_model(args, tmp))
    student = mlflow.pyfunc.load_model(build_student_model(args, tmp))
    runs = {"ensemble": lambda f, p=None: ensemble.predict(f, params=p),
            "student": lambda f, p=None: student.predict(f, params=p)}
    out = interleaved(runs, args)
    out["student_over_ensemble"] = out["student"]["clips_per_s"] / out["ensemble"]["clips_per_s"]
    return out


def bench_student_served(args) -> dict:
    """Part 5: the registered ensemble and student each behind a real ``fsd serve`` on
    127.0.0.1, one 5 s clip a request, requests interleaved; then, optionally, ``fsd predict
    --window 5 --hop 2.5`` over a long recording with the student (the whole command timed,
    its start included)."""
    import subprocess

    import mlflow

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))
    from local_server import LocalServer, audio_request

    tmp = Path(tempfile.mkdtemp(prefix="fsd-student-serve-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
    mlflow.create_experiment("serve-benchmark", artifact_location=(tmp / "artifacts").as_uri())
    uris = {"ensemble": build_served_model(args, tmp), "student": build_student_model(args, tmp)}
    body = audio_request([clip_wav(args.clip_seconds)])
    lat: dict[str, list[float]] = {k: [] for k in uris}
    with contextlib.ExitStack() as stack:
        servers = {k: stack.enter_context(LocalServer(
            u, front=True, start_timeout=300, request_timeout=120,
            log_path=tmp / f"{k}.log")) for k, u in uris.items()}
        for name, srv in servers.items():
            for _ in range(2):  # warm-up: traces every length
                status, out = srv.invoke(body)
                if status != 200:
                    raise RuntimeError(f"{name}: warm-up request failed ({status}): {out}")
        for _ in range(args.latency_requests):
            for name, srv in servers.items():
                t0 = time.perf_counter()
                status, _ = srv.invoke(body, timeout=120)
                lat[name].append(time.perf_counter() - t0)
                assert status == 200, (name, status)
    out: dict = {"clip_seconds": args.clip_seconds, "requests": args.latency_requests}
    for name, times in lat.items():
        out[name] = {"p50_s": statistics.median(times),
                     "p95_s": float(np.percentile(times, 95)),
                     "clips_per_s": len(times) / sum(times)}
    out["student_over_ensemble"] = out["student"]["clips_per_s"] / out["ensemble"]["clips_per_s"]
    if args.predict_recording_seconds > 0:
        wav = tmp / "recording.wav"
        wav.write_bytes(clip_wav(args.predict_recording_seconds, seed=3))
        demo = Path(__file__).resolve().parents[1] / "experiments" / "demo.yaml"
        cmd = [sys.executable, "-m", "fsd", "predict", "--config", str(demo),
               "--model", uris["student"], "--window",
               "5", "--hop", "2.5", "--output", str(tmp / "windows.csv"), str(wav)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=tmp)
        dt = time.perf_counter() - t0
        out["predict"] = {"recording_seconds": args.predict_recording_seconds, "seconds": dt,
                          "x_real_time": args.predict_recording_seconds / dt}
    return out


def print_interleaved(figures: dict, names: tuple[str, str], note: str, ratio: str) -> None:
    """Parts 3 and 4: each model's latency and clips/s, their ratio, then the recording."""
    print(f"one {figures['clip_seconds']:g} s clip a request, {figures['requests']} requests "
          f"each, interleaved {note}:")
    for name in names:
        r = figures[name]
        print(f"  {name:<10} p50 {r['p50_s'] * 1000:.0f} ms, p95 {r['p95_s'] * 1000:.0f} ms, "
              f"{r['clips_per_s']:.2f} clips/s")
    print(f"  {ratio} clips/s")
    w = figures["windows"]
    for name in names:
        r = w[name]
        print(f"  windows, {w['recording_seconds']:g} s recording, {w['window_seconds']:g} s "
              f"every {w['hop_seconds']:g} s, {name}: {r['windows']} windows in "
              f"{r['seconds']:.2f} s ({r['x_real_time']:.1f}x real time)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    figures: dict = {}
    if not args.skip_tta:
        figures["tta"] = t = bench_tta(args)
        print(f"TTA {t['folds']} folds x {len(t['lengths'])} lengths {t['lengths']} x "
              f"{t['crops']} crops = {t['views_per_clip']} views/clip, {t['clips']} clips")
        print(f"  batched {t['batched_clips_per_s']:.2f} clips/s | naive "
              f"{t['naive_clips_per_s']:.2f} | raw forward {t['raw_clips_per_s']:.2f} | "
              f"batched/raw {t['batched_over_raw']:.2f} | batched/naive "
              f"{t['batched_over_naive']:.1f}x | forward share of batched "
              f"{t['batched_forward_share']:.1%}")
    if not args.skip_export:
        figures["export"] = e = bench_export(args)
        print_interleaved(e, ("registered", "exported"),
                          f"(export took {e['export_s']:.1f} s)",
                          f"exported / registered: {e['exported_over_registered']:.2f}x")
    if not args.skip_student:
        figures["student"] = st = bench_student(args)
        print_interleaved(st, ("ensemble", "student"), "(ensemble vs student)",
                          f"student / ensemble: {st['student_over_ensemble']:.1f}x")
    if args.served_student:
        figures["served_student"] = ss = bench_student_served(args)
        print(f"through fsd serve, one {ss['clip_seconds']:g} s clip a request, "
              f"{ss['requests']} each, interleaved:")
        for name in ("ensemble", "student"):
            r = ss[name]
            print(f"  {name:<10} p50 {r['p50_s'] * 1000:.0f} ms, p95 {r['p95_s'] * 1000:.0f} ms, "
                  f"{r['clips_per_s']:.2f} clips/s")
        print(f"  student / ensemble: {ss['student_over_ensemble']:.1f}x clips/s")
        if "predict" in ss:
            pr = ss["predict"]
            print(f"  fsd predict --window 5 --hop 2.5, {pr['recording_seconds']:g} s recording, "
                  f"student: {pr['seconds']:.1f} s ({pr['x_real_time']:.1f}x real time)")
    if not args.skip_serve:
        figures["serve"] = s = bench_serve(args)
        print(f"served, one {s['clip_seconds']:g} s clip: p50 {s['latency_p50_s'] * 1000:.0f} ms, "
              f"p95 {s['latency_p95_s'] * 1000:.0f} ms")
        print(f"  {s['concurrency']} concurrent clients: {s['throughput_clips_per_s']:.2f} clips/s, "
              f"p50 {s['concurrent_p50_s'] * 1000:.0f} ms, p95 {s['concurrent_p95_s'] * 1000:.0f} ms "
              f"({s['ok']}/{s['requests']} ok)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
