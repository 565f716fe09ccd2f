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

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from fsd.export.portable import Portable, read_portable

MANIFEST = "export.json"  # as fsd.export.writer.MANIFEST (not imported: it needs no writer)
EXPORT_FORMAT = "fsd-export-1"


class ExportedNetwork:
    """One ONNX fold network behind the ``predict_on_batch`` the TTA code calls."""

    def __init__(self, path: Path, inputs: list[str], threads: int = 0):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), sess_options=opts,
                                            providers=["CPUExecutionProvider"])
        names = [i.name for i in self.session.get_inputs()]
        # ONNX inputs carry the Keras inputs' names (logmel, pca), maybe with a :0 suffix
        self.names = [next(n for n in names if n.split(":")[0] == k) for k in inputs]
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
        from fsd.config import load_config

        path = Path(path)
        file = path / MANIFEST
        if not file.is_file():
            raise FileNotFoundError(f"{path} is not an fsd export: {MANIFEST} is missing")
        manifest = json.loads(file.read_text())
        if manifest.get("format") != EXPORT_FORMAT or manifest.get("kind") != "onnx":
            raise ValueError(f"{path}: not an ONNX export of format {EXPORT_FORMAT} "
                             f"(kind {manifest.get('kind')!r})")
        cfg = load_config(path / manifest["front_end"]["config"])
        models, projectors = [], []
        for entry in manifest["folds"]:
            if entry.get("error"):
                continue  # a network the converter refused is not in the export
            models.append(ExportedNetwork(path / entry["model"], entry["inputs"], threads))
            proj = None
            if entry.get("projector"):
                specs, arrays = read_portable(path / entry["projector"])
                proj = Portable(specs["projector"], arrays)
            projectors.append(proj)
        baseline, weight = None, 1.0
        if manifest.get("baseline"):
            specs, arrays = read_portable(path / manifest["baseline"]["path"])
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
