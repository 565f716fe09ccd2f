"""Run an ONNX export (``fsd export --format onnx``) with onnxruntime and numpy/librosa only:
TensorFlow, Keras, MLflow and scikit-learn's pickles are never imported.

It does what the registered model does, with the same code where the code is not the network
(the scoring path of :mod:`fsd.inference`): decode and featurize each clip
(:func:`fsd.inference.clips.clip_features`), project the
summary features with each fold's scaler + PCA (arrays, :mod:`fsd.export.portable`), score
folds x TTA lengths x crops (:func:`fsd.model.tta.predict_ensemble`, the crops derived from
each clip's content and the seed) with the ONNX networks, take the geometric mean and blend
it with the portable baseline. So it gives the same top labels and probabilities as the
registered model on the same clips, to float32 rounding of the networks.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from fsd.export.manifest import ExportInvalid, inside, verify_export
from fsd.export.portable import Portable, read_portable

INFO_KEYS = ("top_k", "tta_lengths", "tta_crops", "seed", "batch_size")  # what predict reads


class ExportedNetwork:
    """One ONNX fold network behind the ``predict_on_batch`` the TTA code calls."""

    def __init__(self, path: Path, inputs: list[str], threads: int = 0):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own error types (InvalidProtobuf, Fail, ...)
            raise ExportInvalid(f"{path} is not a readable ONNX model "
                                f"({type(exc).__name__}): export again") from None
        names = [i.name for i in self.session.get_inputs()]
        if not isinstance(inputs, list) or not all(isinstance(k, str) for k in inputs):
            raise ExportInvalid(f"{path}: the manifest's inputs are not a list of names")
        # ONNX inputs carry the Keras inputs' names (logmel, pca), maybe with a :0 suffix
        found = [[n for n in names if n.split(":")[0] == k] for k in inputs]
        if not all(found):
            raise ExportInvalid(f"{path}: the network has no input the manifest names")
        self.names = [f[0] for f in found]
        self.inputs = [SimpleNamespace(name=k) for k in inputs]

    def predict_on_batch(self, x) -> np.ndarray:
        xs = x if isinstance(x, (list, tuple)) else [x]
        feeds = {n: np.ascontiguousarray(v, dtype=np.float32) for n, v in zip(self.names, xs)}
        return self.session.run(None, feeds)[0]


class ExportedModel:
    """An export folder loaded: ``predict`` has :class:`fsd.ensemble.bundle.Ensemble`'s
    signature, so the request and window code run over it unchanged."""

    def __init__(self, path: Path, manifest: dict[str, Any], cfg, models, projectors,
                 baseline: Portable | None, weight: float):
        self.path, self.manifest, self.cfg = path, manifest, cfg
        self.models, self.projectors = models, projectors
        self.baseline, self.blend_weight = baseline, weight
        self.info = SimpleNamespace(**manifest["info"])
        self.labels = list(manifest["labels"])

    @property
    def top_k(self) -> int:
        return int(self.info.top_k)

    @classmethod
    def load(cls, path: str | os.PathLike, threads: int = 0) -> ExportedModel:
        """Load an ONNX export once :func:`fsd.export.manifest.verify_export` holds: every
        path inside the folder, every file's and the labels' SHA-256 as exported, nothing
        else there. Any failure is an ExportInvalid of one line."""
        path = Path(path)
        manifest = verify_export(path)
        if manifest["kind"] != "onnx":
            raise ExportInvalid(f"{path}: a {str(manifest['kind'])[:20]!r} export; "
                                "`--exported` runs ONNX exports (fsd export --format onnx)")
        listed = set(manifest["files"])

        def listed_path(rel, *suffixes: str) -> Path:
            for name in [rel + s for s in suffixes] if suffixes else [rel]:
                if name not in listed:  # verified files only
                    raise ExportInvalid(f"{path}: {str(name)[:80]!r} is not a file the "
                                        "manifest vouches for: export again")
            return inside(path, rel)

        try:
            return cls._load(path, manifest, threads, listed_path)
        except ExportInvalid:
            raise
        except (KeyError, TypeError, AttributeError) as exc:
            raise ExportInvalid(f"{path}: the manifest lacks or mistypes {str(exc)[:60]}: "
                                "export again") from None
        except (ValueError, OSError) as exc:  # a portable file or config that is not one
            reason = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
            raise ExportInvalid(f"{path}: {reason}") from None

    @classmethod
    def _load(cls, path: Path, manifest: dict[str, Any], threads: int, listed_path):
        from fsd.config import ConfigError, load_config

        missing = [k for k in INFO_KEYS if k not in manifest["info"]]
        if missing:
            raise ExportInvalid(f"{path}: the manifest's info lacks {missing[0]!r}: export again")
        try:
            cfg = load_config(listed_path(manifest["front_end"]["config"]))
        except ConfigError as exc:
            raise ExportInvalid(f"{path}: its config: {exc}") from None
        models, projectors = [], []
        for entry in manifest["folds"]:
            if entry.get("error"):
                continue  # a network the converter refused is not in the export
            models.append(ExportedNetwork(listed_path(entry["model"]), entry["inputs"], threads))
            proj = None
            if entry.get("projector"):
                specs, arrays = read_portable(listed_path(entry["projector"], ".json", ".npz"))
                proj = Portable(specs["projector"], arrays)
            projectors.append(proj)
        if not models:
            raise ExportInvalid(f"{path}: the manifest lists no fold network")
        baseline, weight = None, 1.0
        if manifest.get("baseline"):
            specs, arrays = read_portable(listed_path(manifest["baseline"]["path"], ".json",
                                                      ".npz"))
            baseline, weight = Portable(specs["baseline"], arrays), float(
                manifest["baseline"]["weight"])
        return cls(path, manifest, cfg, models, projectors, baseline, weight)

    def predict(self, logmels, summaries, lengths=None, crops=None, seed=None) -> np.ndarray:
        """(n, classes) probabilities (see :meth:`fsd.ensemble.bundle.Ensemble.predict`)."""
        from fsd.model.tta import predict_ensemble

        if summaries is None and (self.baseline is not None or any(self.projectors)):
            raise ValueError("this model needs summary features (summary.enabled)")
        pcas = [None if p is None else p.transform(np.asarray(summaries, np.float32))
                for p in self.projectors]
        cnn = predict_ensemble(
            self.models, logmels, pcas, lengths=list(lengths or self.info.tta_lengths),
            crops=int(crops or self.info.tta_crops),
            seed=int(self.info.seed if seed is None else seed),
            batch_size=int(self.info.batch_size)).probs()
        if self.baseline is None:
            return cnn
        from fsd.evaluation.blend import blend

        base = self.baseline.predict_proba(np.asarray(summaries, np.float32))
        return blend(cnn, base, self.blend_weight)

    def predict_files(self, files, top_k: int | None = None) -> list[dict]:
        """One row per file: fname, label_1, score_1, ... (or error), as `fsd predict`."""
        from fsd.inference.scoring import score_files

        return score_files(self, files, int(top_k or self.top_k))

    def window_scorer(self):
        from fsd.inference.windows import WindowScorer

        return WindowScorer(self)
