"""Write a registered ensemble for runtimes outside MLflow: every fold network (ONNX,
SavedModel or LiteRT), the front end's parameters (the log-mel and summary settings, each
fold's scaler + PCA as arrays), the blend's baseline as arrays, and a manifest
(``export.json``; the layout is in ``fsd/export/writer.py``). The export is logged as an
artifact of the ensemble run the model came from (``export/<format>/``).

Run an ONNX export with ``fsd predict --exported DIR FILES...``: onnxruntime and
numpy/librosa only, no TensorFlow. ``--quantize int8`` (ONNX only) stores each network with
int8 weights (onnxruntime's dynamic quantization; ``--quantize-ops`` which operators), logged
under ``export/onnx-int8/``; what it costs in accuracy is measured by
``benchmarks/quantize.py``. A network the converter refuses is named in the manifest
with the reason (and the command exits 1); the others are still written.
"""

from __future__ import annotations

import argparse
import logging

from fsd.config import Config
from fsd.export.quantize import QUANTIZE, QUANTIZE_OPS

HELP = "write a registered ensemble for other runtimes (onnx, saved_model, litert)"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="",
                   help="model URI (default: models:/<ensemble.model_name>@<ensemble.alias>)")
    p.add_argument("--format", dest="fmt", default="onnx",
                   choices=("onnx", "saved_model", "litert"), help="(default: %(default)s)")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="folder to write (replaced when it holds an earlier export)")
    p.add_argument("--quantize", default="none", choices=QUANTIZE,
                   help="int8 weights, dynamic quantization (onnx only; default: %(default)s)")
    p.add_argument("--quantize-ops", default="all", choices=tuple(QUANTIZE_OPS),
                   help="with --quantize: the operators quantized: all (convolutions and dense "
                        "layers) or matmul (dense layers only) (default: %(default)s)")
    p.add_argument("--no-log", action="store_true",
                   help="do not log the export to the ensemble run it came from")


def run(cfg: Config, args: argparse.Namespace) -> int:
    import mlflow
    from mlflow.exceptions import MlflowException

    from fsd.export.writer import ExportError, check_options, export_ensemble
    from fsd.serving.pyfunc import ensemble_of
    from fsd.tracking.artifacts import EXPORT_ARTIFACT

    uri = args.model or f"models:/{cfg.ensemble.model_name}@{cfg.ensemble.alias}"
    try:
        check_options(args.fmt, args.quantize, args.quantize_ops)
    except ExportError as exc:
        log.error("%s", exc)
        return 2
    try:
        model = mlflow.pyfunc.load_model(uri)
        run_id = mlflow.models.get_model_info(uri).run_id or ""
    except MlflowException as exc:
        log.error("cannot load model %s: %s", uri, exc.message)
        return 2
    try:
        manifest = export_ensemble(ensemble_of(model), args.output, args.fmt,
                                   source={"model_uri": uri, "run_id": run_id},
                                   quantize=args.quantize, quantize_ops=args.quantize_ops)
    except ExportError as exc:
        log.error("%s", exc)
        return 1
    failed = [f for f in manifest["folds"] if f.get("error")]
    for f in manifest["folds"]:
        state = f"ERROR: {f['error']}" if f.get("error") else \
            f"{f['model']} (max |diff| vs Keras {f['max_abs_diff']:.1e})"
        print(f"fold {f['fold']}: {state}")
    print(f"front end: {manifest['front_end']['config']}; baseline: "
          f"{'baseline.json/.npz' if manifest['baseline'] else 'none'}; manifest: export.json")
    if manifest.get("quantization"):
        print(f"quantized: int8 weights ({args.quantize_ops}); max |diff| vs Keras above is "
              "the int8 network's")
    if run_id and not args.no_log:
        kind = args.fmt if args.quantize == "none" else f"{args.fmt}-{args.quantize}"
        mlflow.MlflowClient().log_artifacts(run_id, args.output, f"{EXPORT_ARTIFACT}/{kind}")
        print(f"logged to run {run_id} under {EXPORT_ARTIFACT}/{kind}/")
    return 1 if failed else 0
