"""Write a loaded ensemble for other runtimes: the fold networks, the front end's parameters,
the blend's baseline and a manifest.

Layout of an export folder::

    export.json            the manifest: format, labels, TTA defaults, the blend weight, each
                           fold's network and projector, the front end, where it came from,
                           and each network's agreement with Keras on a probe input
    config.yaml            the training config: audio decoding, log-mel and summary settings
    folds/fold_<k>.onnx    (onnx) or folds/fold_<k>/ (saved_model) or fold_<k>.tflite (litert);
                           folds/fold_<k>.int8.onnx with ``--quantize int8`` (fsd.export.quantize)
    folds/fold_<k>_projector.json/.npz    the fold's StandardScaler + PCA of the summary
                           features as arrays (fsd.export.portable), when the network takes it
    baseline.json/.npz     the blend's baseline as arrays, when the ensemble blends one

The audio front end (decoding, log-mel, summary features) stays outside the exported graphs,
as numpy/librosa code driven by ``config.yaml``: STFT and mel layers are what these
converters handle worst. Networks take ``logmel`` (batch, frames, n_mels, 1), frames free,
and ``pca`` (batch, components) where they have it, and answer softmax probabilities.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from fsd.config import dump_config
from fsd.export.manifest import (
    EXPORT_FORMAT,
    MANIFEST,
    ExportInvalid,
    empty_dirs,
    hash_files,
    labels_sha256,
    verify_export,
)
from fsd.export.portable import _Arrays, baseline_spec, projector_spec, write_portable
from fsd.export.quantize import QUANTIZE, QUANTIZE_OPS, quantization_spec, quantize_onnx

log = logging.getLogger(__name__)

CONFIG = "config.yaml"
FORMATS = ("onnx", "saved_model", "litert")
PROBE_FRAMES = 157  # an odd length, not a crop length the networks were traced at
_VERSIONS = ("tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx", "onnxruntime",
             "scikit-learn", "numpy", "librosa")


class ExportError(ValueError):
    """An ensemble that cannot be exported as asked (a folder in the way, no network left)."""


def export_ensemble(ensemble, out_dir: str | Path, fmt: str = "onnx",
                    source: dict[str, Any] | None = None, quantize: str = "none",
                    quantize_ops: str = "all") -> dict[str, Any]:
    """Write ``ensemble`` (a loaded :class:`fsd.ensemble.bundle.Ensemble`) to ``out_dir`` in
    ``fmt``; returns the manifest. A fold whose network the converter refuses is listed in the
    manifest with the reason (``error``) and left out; none left is an ExportError.
    ``quantize="int8"`` (ONNX only) stores each network with int8 weights
    (:mod:`fsd.export.quantize`, ``quantize_ops`` the operators)."""
    check_options(fmt, quantize, quantize_ops)
    out = Path(out_dir)
    check_target(out)
    try:  # beside the target, so the final rename stays on one file system
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.fsd-export-", dir=out.parent))
    except OSError as exc:
        raise ExportError(f"cannot write in {out.parent} ({exc.strerror or exc}): choose an "
                          "output folder you can write to") from None
    try:
        manifest = _write(ensemble, tmp, fmt, source, (quantize, quantize_ops))
        _put_in_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # ours; gone already once renamed
    return manifest


def check_options(fmt: str, quantize: str = "none", quantize_ops: str = "all") -> None:
    """An ExportError of one line for a format or quantization this module cannot write."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if quantize not in QUANTIZE:
        raise ExportError(f"unknown quantization {quantize!r}; use one of {', '.join(QUANTIZE)}")
    if quantize_ops not in QUANTIZE_OPS:
        raise ExportError(f"unknown quantize ops {quantize_ops!r}; use one of "
                          f"{', '.join(QUANTIZE_OPS)}")
    if quantize != "none" and fmt != "onnx":  # int8 is onnxruntime's: ONNX exports only
        raise ExportError(f"--quantize {quantize} is for ONNX exports only (--format onnx), "
                          f"not {fmt}")


def check_target(out: Path) -> None:
    """Refuse an output that is a link, a file, or a folder that is not provably an earlier
    export (its manifest's hashes match every file and nothing else is there): the folder is
    replaced, and nothing a user owns is ever deleted."""
    if out.is_symlink():
        raise ExportError(f"{out} is a symbolic link: give the path of a real folder")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file, not a folder: choose another output path")
    if out.is_dir() and not os.access(out, os.W_OK | os.X_OK):  # the user's wish: leave it
        raise ExportError(f"{out} is read-only: choose an output folder you can write to")
    if out.is_dir() and any(out.iterdir()):
        try:
            verify_export(out)
        except ExportInvalid as exc:
            raise ExportError(f"{out} exists and is not an earlier export left as written "
                              f"({exc}): choose a new folder; nothing was changed") from None
        except OSError as exc:
            raise ExportError(f"cannot read {out} ({exc.strerror or exc}): choose a new "
                              "folder") from None


def _put_in_place(tmp: Path, out: Path) -> None:
    """Move the finished export to ``out``; an earlier export there is moved aside, checked
    again (it may have changed since :func:`check_target`) and only then deleted."""
    try:
        if not out.exists():
            os.rename(tmp, out)
            return
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.fsd-old-", dir=out.parent))
        old.rmdir()
        os.rename(out, old)
        try:
            if any(old.iterdir()):
                verify_export(old)
        except ExportInvalid as exc:
            os.rename(old, out)
            raise ExportError(f"{out} changed while exporting ({exc}): nothing was "
                              "replaced") from None
        os.rename(tmp, out)
        shutil.rmtree(old)
    except OSError as exc:
        raise ExportError(f"cannot write {out} ({exc.strerror or exc}): choose an output "
                          "folder you can write to") from None


def _write(ensemble, out: Path, fmt: str, source: dict[str, Any] | None,
           quant: tuple[str, str]) -> dict[str, Any]:
    (out / "folds").mkdir(parents=True)
    cfg, info = ensemble.cfg, ensemble.info
    (out / CONFIG).write_text(dump_config(cfg))
    folds = []
    for k, (model, projector, fold) in enumerate(zip(ensemble.models, ensemble.projectors,
                                                     ensemble.folds)):
        entry: dict[str, Any] = {"fold": int(fold), "inputs": [i.name for i in model.inputs]}
        probe = _probe(model, cfg.logmel.n_mels, k)
        t0 = time.perf_counter()
        try:
            entry.update(_export_network(model, out, f"folds/fold_{fold}", fmt, probe, quant))
        except Exception as exc:  # the converter's refusal: say which fold and why
            entry["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            log.warning("fold %d: %s export failed: %s", fold, fmt, entry["error"])
        entry["export_s"] = round(time.perf_counter() - t0, 2)
        if projector is not None:
            arrays = _Arrays()
            spec = projector_spec(projector, arrays)
            write_portable(out / f"folds/fold_{fold}_projector", {"projector": spec}, arrays)
            entry["projector"] = f"folds/fold_{fold}_projector"
        folds.append(entry)
    if not any("error" not in f for f in folds):
        raise ExportError(f"the {fmt} converter refused every fold network: "
                          f"{folds[0]['error']}")
    baseline = None
    if ensemble.baseline is not None:
        arrays = _Arrays()
        spec = baseline_spec(ensemble.baseline, arrays)
        write_portable(out / "baseline", {"baseline": spec}, arrays)
        baseline = {"path": "baseline", "name": ensemble.baseline.name,
                    "weight": float(info.blend_weight),
                    "run_id": (info.baseline or {}).get("run_id", "")}
    manifest = {
        "format": EXPORT_FORMAT, "kind": fmt, "labels": list(ensemble.labels),
        "info": {k: v for k, v in dataclasses.asdict(info).items()},
        "folds": folds, "baseline": baseline, "quantization": quantization_spec(*quant),
        "front_end": {"config": CONFIG, "input": "raw audio, any format soundfile reads",
                      "audio": dataclasses.asdict(cfg.audio),
                      "logmel": dataclasses.asdict(cfg.logmel),
                      "summary": dataclasses.asdict(cfg.summary),
                      "runtime": "fsd.features.extract (numpy, scipy, librosa, soundfile, soxr)"},
        "combine": "geometric mean over folds x tta_lengths x tta_crops of the networks' "
                   "softmax, then blend_weight * cnn + (1 - blend_weight) * baseline",
        "source": dict(source or {}),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": _versions(),
        "labels_sha256": labels_sha256(list(ensemble.labels)),
        "files": hash_files(out),
        "dirs": empty_dirs(out),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, default=_jsonable))
    return manifest


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def _versions() -> dict[str, str]:
    out = {}
    for name in _VERSIONS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _probe(model, n_mels: int, seed: int) -> list[np.ndarray]:
    """A random input of the network's shape; calling the model once also makes a loaded
    Keras model exportable (Keras refuses a model that has never been called)."""
    rng = np.random.default_rng(seed)
    x = [rng.random((2, PROBE_FRAMES, n_mels, 1), dtype=np.float32)]
    if len(model.inputs) == 2:
        x.append(rng.standard_normal((2, int(model.inputs[1].shape[-1]))).astype(np.float32))
    return x


def _export_network(model, out: Path, stem: str, fmt: str, probe: list[np.ndarray],
                    quant: tuple[str, str] = ("none", "all")) -> dict:
    ref = np.asarray(model.predict_on_batch(probe if len(probe) > 1 else probe[0]))
    if fmt == "onnx":
        path = out / f"{stem}.onnx"
        model.export(str(path), format="onnx", verbose=False)
        got = _run_onnx(path, model, probe)
        diff = float(np.abs(got - ref).max())
        entry = {"model": f"{stem}.onnx", "output": "softmax", "max_abs_diff": diff}
        if quant[0] == "int8":
            entry["float_max_abs_diff"] = diff
            entry.update(_quantized(out, stem, quant[1], model, probe, ref))
        return entry
    if fmt == "saved_model":
        path = out / stem
        model.export(str(path), format="tf_saved_model", verbose=False)
        got = _run_saved_model(path, model, probe)
        return {"model": stem, "endpoint": "serve",
                "max_abs_diff": float(np.abs(got - ref).max())}
    with tempfile.TemporaryDirectory() as tmp:  # litert: SavedModel, then the TFLite converter
        import tensorflow as tf

        model.export(tmp, format="tf_saved_model", verbose=False)
        flat = tf.lite.TFLiteConverter.from_saved_model(tmp).convert()
    path = out / f"{stem}.tflite"
    path.write_bytes(flat)
    got = _run_litert(path, model, probe)
    return {"model": f"{stem}.tflite", "max_abs_diff": float(np.abs(got - ref).max())}


def _quantized(out: Path, stem: str, ops: str, model, probe: list[np.ndarray],
               ref: np.ndarray) -> dict:
    """``stem``.onnx (the float32 network, then removed: the export holds what it serves) with
    int8 weights as ``stem``.int8.onnx, and its difference from Keras on the probe (the float
    network's stays as ``float_max_abs_diff``)."""
    src, rel = out / f"{stem}.onnx", f"{stem}.int8.onnx"
    quantize_onnx(src, out / rel, ops)
    src.unlink()
    got = _run_onnx(out / rel, model, probe)
    return {"model": rel, "quantized": "int8", "max_abs_diff": float(np.abs(got - ref).max())}


def _feeds(names: list[str], model, probe: list[np.ndarray]) -> dict[str, np.ndarray]:
    by_name = {i.name: x for i, x in zip(model.inputs, probe)}
    return {n: by_name[n.split(":")[0]] for n in names}


def _run_onnx(path: Path, model, probe: list[np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, _feeds([i.name for i in s.get_inputs()], model, probe))[0]


def _run_saved_model(path: Path, model, probe: list[np.ndarray]) -> np.ndarray:
    import tensorflow as tf

    served = tf.saved_model.load(str(path))
    return np.asarray(served.serve(probe if len(probe) > 1 else probe[0]))


def _run_litert(path: Path, model, probe: list[np.ndarray]) -> np.ndarray:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # TensorFlow's own (deprecated, still shipped with 2.21)
        import warnings

        import tensorflow as tf

        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        Interpreter = tf.lite.Interpreter
    it = Interpreter(model_path=str(path))
    details = it.get_input_details()
    by_rank = {x.ndim: x for x in probe}
    for d in details:
        it.resize_tensor_input(d["index"], by_rank[len(d["shape_signature"])].shape)
    it.allocate_tensors()
    for d in details:
        it.set_tensor(d["index"], by_rank[len(d["shape_signature"])])
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])
