"""int8 ONNX exports against float ones: accuracy on held-out clips and speed, side by side.

Each registered model (default: the demo's ensemble and its distilled student) is exported
three times with ``fsd export``'s own code (:func:`fsd.export.writer.export_ensemble`): float32,
int8 with every operator onnxruntime quantizes dynamically (``--quantize-ops all``: the
convolutions too) and int8 with the dense layers only (``--quantize-ops matmul``). Each export
is loaded as ``fsd predict --exported`` loads it (:class:`fsd.export.predictor.ExportedModel`)
and scores the same held-out labelled clips from features computed once (the front end is the
same numpy/librosa code for all three): MAP@3 and accuracy against the labels, top-1 agreement
with the float export, the largest probability difference from it; then clips/s of the
networks' work over all clips at once (TTA included), and the median latency of one clip a
call (as a served request), the three exports' repeats interleaved in a rotating order, best
of ``--repeats``.

Models: ``--model URI`` (repeatable; MLFLOW_TRACKING_URI names the store) or, by default, the
demo's: ``fsd main --config experiments/demo.yaml --set distill.enabled=true`` in a sqlite store
under ``--store DIR`` (kept, and reused by the next run: the demo trains once). Held-out clips:
``--clips CSV`` (fname,label; audio beside the CSV), or, by default, a fresh synthetic sample
of the demo's classes with another seed (``--heldout-seed``): clips no model has seen.

    .venv/bin/python benchmarks/quantize.py --store /tmp/fsd-quantize   # builds the demo once
    .venv/bin/python benchmarks/quantize.py --store /tmp/fsd-quantize --repeats 7
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from results_log import append_result  # noqa: E402  (beside this script)

VARIANTS = {"float32": ("none", "all"), "int8 (all ops)": ("int8", "all"),
            "int8 (matmul only)": ("int8", "matmul")}
DEMO_MODELS = ("models:/fsd-demo@champion", "models:/fsd-demo-student@champion")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--model", action="append", default=[],
                   help="a registered model URI (repeatable; default: the demo's ensemble and "
                        "student, built under --store)")
    p.add_argument("--store", default="",
                   help="folder of the demo's sqlite store and outputs (default: a new temp "
                        "folder); reused when it already holds the demo's models")
    p.add_argument("--clips", default="", help="held-out clips: a CSV fname,label, audio beside it")
    p.add_argument("--heldout-seed", type=int, default=1,
                   help="seed of the fresh synthetic held-out sample (the demo trained on 0)")
    p.add_argument("--heldout-per-class", type=int, default=16)
    p.add_argument("--repeats", type=int, default=10, help="timed repeats (best is reported)")
    p.add_argument("--latency-clips", type=int, default=20,
                   help="clips timed one a call (median reported)")
    p.add_argument("--threads", type=int, default=0,
                   help="onnxruntime intra-op threads (0: its default, every core)")
    p.add_argument("--results", default=str(REPO / "benchmarks/results/quantize.jsonl"))
    return p.parse_args(argv)


def build_demo(store: Path) -> None:
    """The demo's ensemble and student, registered in ``store``'s sqlite tracking store
    (skipped when the student is already there)."""
    import mlflow

    try:
        mlflow.MlflowClient().get_model_version_by_alias("fsd-demo-student", "champion")
        print(f"reusing the demo's models in {store}", flush=True)
        return
    except mlflow.exceptions.MlflowException:
        pass
    cmd = [sys.executable, "-m", "fsd", "main", "--config", str(REPO / "experiments/demo.yaml"),
           "--set", f"output_dir={store / 'outputs'}", "--set", "distill.enabled=true"]
    print("building the demo:", " ".join(cmd), flush=True)
    with open(store / "main.log", "w") as log:
        rc = subprocess.run(cmd, cwd=store, env=dict(os.environ), stdout=log,
                            stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SystemExit(f"fsd main failed ({rc}); see {store / 'main.log'}")


def heldout_clips(args, tmp: Path) -> tuple[list[bytes], list[str]]:
    """(audio bytes, label) of the held-out clips."""
    if args.clips:
        csv_path = Path(args.clips)
    else:
        from fsd.data.synthetic import generate_sample

        csv_path = generate_sample(tmp / "heldout", args.heldout_per_class, args.heldout_seed)
    rows = list(csv.DictReader(csv_path.open()))
    return [(csv_path.parent / r["fname"]).read_bytes() for r in rows], [r["label"] for r in rows]


def export_variants(uri: str, out: Path) -> dict:
    """The registered model exported once per variant; {variant: (folder, manifest, export
    seconds, size in bytes of its networks)}."""
    import mlflow

    from fsd.export.writer import export_ensemble
    from fsd.serving.pyfunc import ensemble_of

    ensemble = ensemble_of(mlflow.pyfunc.load_model(uri))
    done = {}
    for name, (quantize, ops) in VARIANTS.items():
        folder = out / name.split()[0] / ops
        t0 = time.perf_counter()
        manifest = export_ensemble(ensemble, folder, "onnx", source={"model_uri": uri},
                                   quantize=quantize, quantize_ops=ops)
        seconds = time.perf_counter() - t0
        size = sum((folder / f["model"]).stat().st_size for f in manifest["folds"])
        done[name] = (folder, manifest, seconds, size)
    return done


def score_and_time(exports: dict, blobs: list[bytes], labels: list[str], args) -> dict:
    """Each export's quality on the clips and its clips/s, repeats interleaved."""
    from fsd.evaluation.metrics import map_at_k
    from fsd.export.predictor import ExportedModel
    from fsd.inference.clips import ClipError, clip_features, stack_summaries

    models = {n: ExportedModel.load(e[0], threads=args.threads) for n, e in exports.items()}
    first = next(iter(models.values()))
    feats, y = [], []
    for blob, label in zip(blobs, labels):
        try:
            feats.append(clip_features(blob, first.cfg))
        except ClipError:  # no log-mel frame: no model scores it
            continue
        y.append(first.labels.index(label))
    mels, summ = [f[0] for f in feats], stack_summaries([f[1] for f in feats])
    y = np.array(y)
    probs = {n: m.predict(mels, summ) for n, m in models.items()}  # also the warm-up
    best = _timed(models, lambda m: m.predict(mels, summ), args.repeats)
    one = {n: [] for n in models}
    for i in range(min(args.latency_clips, len(mels))):
        row = None if summ is None else summ[i:i + 1]
        for n, t in _timed(models, lambda m: m.predict(mels[i:i + 1], row), 3).items():
            one[n].append(t)
    ref = probs["float32"]
    rows = {}
    for n, p in probs.items():
        folder, manifest, seconds, size = exports[n]
        rows[n] = {"map3": map_at_k(y, p, 3), "accuracy": float((p.argmax(1) == y).mean()),
                   "top1_agreement": float((p.argmax(1) == ref.argmax(1)).mean()),
                   "max_abs_prob_diff": float(np.abs(p - ref).max()),
                   "clips_per_s": len(y) / best[n],
                   "speed_vs_float": best["float32"] / best[n],
                   "one_clip_p50_ms": 1000 * float(np.median(one[n])),
                   "network_bytes": size, "export_s": round(seconds, 1),
                   "probe_max_abs_diff": max(f["max_abs_diff"] for f in manifest["folds"])}
    return {"clips": len(y), "passes_per_clip": len(first.models) * len(
        first.info.tta_lengths) * int(first.info.tta_crops), "variants": rows}


def _timed(models: dict, call, repeats: int) -> dict[str, float]:
    """Best seconds of ``call(model)`` per model over ``repeats`` rounds, the models' order
    rotated each round (so none always runs first or last)."""
    names = list(models)
    best = {n: float("inf") for n in names}
    for r in range(repeats):
        for n in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            call(models[n])
            best[n] = min(best[n], time.perf_counter() - t0)
    return best


def print_table(uri: str, figures: dict) -> None:
    print(f"\n{uri}: {figures['clips']} held-out clips, {figures['passes_per_clip']} forward "
          "passes a clip")
    print(f"{'export':<20} {'MAP@3':>6} {'acc':>6} {'top-1 agr':>9} {'max|dp|':>8} "
          f"{'clips/s':>8} {'x float':>7} {'1 clip ms':>9} {'MB':>6}")
    for n, r in figures["variants"].items():
        print(f"{n:<20} {r['map3']:6.3f} {r['accuracy']:6.3f} {r['top1_agreement']:9.3f} "
              f"{r['max_abs_prob_diff']:8.4f} {r['clips_per_s']:8.1f} {r['speed_vs_float']:7.2f} "
              f"{r['one_clip_p50_ms']:9.2f} {r['network_bytes'] / 2**20:6.2f}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="fsd-quantize-"))
    models = list(args.model)
    if not models:
        store = Path(args.store or tmp).resolve()
        store.mkdir(parents=True, exist_ok=True)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}/mlflow.db"
        os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
        build_demo(store)
        models = list(DEMO_MODELS)
    blobs, labels = heldout_clips(args, tmp)
    record = {"benchmark": "quantize", "cpu_count": os.cpu_count(), "threads": args.threads,
              "repeats": args.repeats, "clips_source": args.clips or
              f"synthetic seed {args.heldout_seed}, {args.heldout_per_class} a class",
              "models": {}}
    for i, uri in enumerate(models):
        figures = score_and_time(export_variants(uri, tmp / f"m{i}"), blobs, labels, args)
        print_table(uri, figures)
        record["models"][uri] = figures
    append_result(Path(args.results), record)
    print(f"\nappended to {args.results}; exports under {tmp}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
