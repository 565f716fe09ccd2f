"""The ensemble as one self-contained directory, and the object that scores features with it.

Layout (everything serving needs; nothing refers back to the training machine)::

    ensemble.json        labels, fold list, TTA defaults, crop limits, class prior, scores
                         (and, blended, the baseline entry and blend_weight)
    config.yaml          the resolved training config (audio, log-mel and summary settings)
    folds/fold_<k>/model.keras, projector.joblib   (named by fsd.train.folddir.FoldDir)
    baseline/baseline.joblib
                         only in a blended bundle: the baseline fitted on every train clip

:func:`build_bundle` assembles it from the fold runs' downloaded artifacts and
:func:`attach_baseline` adds a baseline; :class:`Ensemble` loads it (the pyfunc's
``load_context`` and the ensemble step use the same object). A blended bundle predicts
``blend_weight * cnn + (1 - blend_weight) * baseline``; it has format 2, so code that does not
know the blend refuses it rather than serving the CNN alone. Without a baseline a bundle is
format 1, exactly as before.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fsd.config import Config, dump_config, load_config
from fsd.model.tta import TTAResult, predict_ensemble
from fsd.train.folddir import FoldDir

BUNDLE_FORMAT = 1
BLENDED_FORMAT = 2  # a bundle with a baseline (older code must not read it as CNN-only)
FORMATS = (BUNDLE_FORMAT, BLENDED_FORMAT)
MANIFEST = "ensemble.json"
CONFIG = "config.yaml"
BASELINE_FILE = "baseline/baseline.joblib"


class BundleError(ValueError):
    """An ensemble directory that is missing files or does not hang together."""


@dataclass
class FoldFiles:
    """One fold's outputs as the training step logged them (artifact folder ``fold/``)."""

    fold: int
    model: Path
    projector: Path | None = None
    run_id: str = ""


@dataclass
class BundleInfo:
    """What ensemble.json records besides the fold list."""

    labels: list[str]
    tta_lengths: list[int]
    tta_crops: int
    seed: int
    top_k: int
    batch_size: int
    crop_min: int
    crop_max: int
    prior: list[float]
    max_request_clips: int
    max_clip_bytes: int
    train_key: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    # The blend: probabilities are blend_weight * cnn + (1 - blend_weight) * baseline. None:
    # no baseline (CNN only). Otherwise {"name", "run_id", "path"} of the bundled model.
    baseline: dict[str, Any] | None = None
    blend_weight: float = 1.0
    max_request_frames: int = 0  # bound on a request's work; 0: fsd.serving.requests' default


def build_bundle(dst: Path, folds: Sequence[FoldFiles], cfg: Config, info: BundleInfo) -> Path:
    """Copy each fold's model and projector under ``dst`` and write the manifest and config."""
    if not folds:
        raise BundleError("an ensemble needs at least one fold")
    if len(info.labels) < 2:
        raise BundleError(f"need at least 2 labels, got {info.labels}")
    if info.baseline is not None:
        raise BundleError("build the bundle first, then add the baseline with attach_baseline")
    if dst.exists():
        shutil.rmtree(dst)
    (dst / "folds").mkdir(parents=True)
    entries = []
    for f in sorted(folds, key=lambda f: f.fold):
        if not Path(f.model).is_file():
            raise BundleError(f"fold {f.fold}: model file {f.model} is missing")
        rel = f"folds/fold_{f.fold}"
        sub = FoldDir(dst / rel)  # the part of a fold folder serving needs
        sub.path.mkdir()
        shutil.copy2(f.model, sub.model)
        entry: dict[str, Any] = {"fold": int(f.fold), "run_id": f.run_id,
                                 "model": f"{rel}/{FoldDir.model}", "projector": None}
        if f.projector is not None and Path(f.projector).is_file():
            shutil.copy2(f.projector, sub.projector)
            entry["projector"] = f"{rel}/{FoldDir.projector}"
        entries.append(entry)
    # the blend's keys appear only once attach_baseline adds one: a CNN-only bundle's
    # manifest is what it always was
    fields = {k: v for k, v in info.__dict__.items() if k not in ("baseline", "blend_weight")}
    manifest = {"format": BUNDLE_FORMAT, "folds": entries, **fields}
    (dst / MANIFEST).write_text(json.dumps(manifest, indent=2, default=_jsonable))
    (dst / CONFIG).write_text(dump_config(cfg))
    return dst


def attach_baseline(dst: Path, model: Path, weight: float, *, name: str = "",
                    run_id: str = "") -> Path:
    """Copy a saved baseline (``BaselineModel.save``) into bundle ``dst`` and record the blend
    weight: the bundle then predicts ``weight * cnn + (1 - weight) * baseline``."""
    if not 0.0 <= float(weight) <= 1.0:
        raise BundleError(f"blend weight must be in [0, 1], got {weight}")
    if not Path(model).is_file():
        raise BundleError(f"baseline model file {model} is missing")
    manifest = read_manifest(dst)
    target = Path(dst) / BASELINE_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(model, target)
    manifest.update({"format": BLENDED_FORMAT, "blend_weight": float(weight),
                     "baseline": {"name": name, "run_id": run_id, "path": BASELINE_FILE}})
    (Path(dst) / MANIFEST).write_text(json.dumps(manifest, indent=2, default=_jsonable))
    return dst


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def read_manifest(path: Path) -> dict[str, Any]:
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise BundleError(f"{path} is not an ensemble bundle: {MANIFEST} is missing")
    manifest = json.loads(file.read_text())
    if manifest.get("format") not in FORMATS:
        raise BundleError(f"unsupported bundle format {manifest.get('format')!r}")
    if manifest.get("format") == BLENDED_FORMAT and not manifest.get("baseline"):
        raise BundleError(f"{path}: a blended bundle (format 2) without a baseline entry")
    return manifest


class Ensemble:
    """Fold models + their scaler/PCA + labels + TTA defaults, loaded from a bundle."""

    def __init__(self, cfg: Config, info: BundleInfo, models: list, projectors: list,
                 folds: list[int], baseline=None):
        self.cfg = cfg
        self.info = info
        self.models = models
        self.projectors = projectors
        self.folds = folds
        self.baseline = baseline  # a fsd.baseline.model.BaselineModel, or None: CNN only
        if baseline is not None and baseline.n_classes != len(info.labels):
            raise BundleError(f"the baseline has {baseline.n_classes} classes, the ensemble "
                              f"{len(info.labels)}")

    @property
    def labels(self) -> list[str]:
        return self.info.labels

    @classmethod
    def load(cls, path: str | Path) -> Ensemble:
        import keras

        path = Path(path)
        manifest = read_manifest(path)
        cfg = load_config(path / CONFIG)
        fields = set(BundleInfo.__dataclass_fields__)
        info = BundleInfo(**{k: v for k, v in manifest.items() if k in fields})
        models, projectors, folds = [], [], []
        for entry in manifest["folds"]:
            model = keras.models.load_model(path / entry["model"], compile=False)
            takes_pca = len(model.inputs) == 2
            projector = None
            if takes_pca:
                if not entry.get("projector"):
                    raise BundleError(f"fold {entry['fold']}: the model takes PCA input but the "
                                      "bundle has no projector for it")
                # imported here: a log-mel-only bundle (a student) never loads scikit-learn
                from fsd.features.projection import SummaryProjector

                projector = SummaryProjector.load(path / entry["projector"])
            models.append(model)
            projectors.append(projector)
            folds.append(int(entry["fold"]))
        return cls(cfg, info, models, projectors, folds, baseline=load_baseline(path, info))

    @property
    def blended(self) -> bool:
        return self.baseline is not None

    def reload_baseline(self, path: str | Path) -> None:
        """Take the blend (baseline and weight) from bundle ``path``'s manifest, as
        :meth:`load` would: after :func:`attach_baseline` on the bundle this object came from."""
        manifest = read_manifest(Path(path))
        self.info.baseline = manifest.get("baseline")
        self.info.blend_weight = float(manifest.get("blend_weight", 1.0))
        self.baseline = load_baseline(Path(path), self.info)

    def pca_inputs(self, summaries: np.ndarray | None) -> list[np.ndarray | None]:
        """Each fold's PCA input (its own scaler+PCA) for ``summaries`` (n, 1133)."""
        out: list[np.ndarray | None] = []
        for proj in self.projectors:
            if proj is None:
                out.append(None)
                continue
            if summaries is None:
                raise BundleError("this ensemble needs summary features (summary.enabled)")
            out.append(np.asarray(proj.transform(np.asarray(summaries, np.float32)), np.float32))
        return out

    def score(self, logmels: Sequence[np.ndarray], summaries: np.ndarray | None,
              lengths: Sequence[int] | None = None, crops: int | None = None,
              seed: int | None = None, members: Sequence[np.ndarray | None] | None = None,
              ) -> TTAResult:
        """Folds x lengths x crops over the clips (see :func:`fsd.model.tta.predict_ensemble`)."""
        return predict_ensemble(
            self.models, logmels, self.pca_inputs(summaries),
            lengths=list(lengths or self.info.tta_lengths),
            crops=int(crops or self.info.tta_crops),
            seed=self.info.seed if seed is None else int(seed),
            batch_size=self.info.batch_size, members=members,
        )

    def predict(self, logmels: Sequence[np.ndarray], summaries: np.ndarray | None,
                lengths: Sequence[int] | None = None, crops: int | None = None,
                seed: int | None = None) -> np.ndarray:
        """(n, classes) probabilities: the geometric mean over all folds, lengths and crops,
        blended with the baseline where the bundle has one (``w * cnn + (1 - w) * baseline``)."""
        cnn = self.score(logmels, summaries, lengths, crops, seed).probs()
        if self.baseline is None:
            return cnn
        return self.blend(cnn, summaries)

    def baseline_probs(self, summaries: np.ndarray | None) -> np.ndarray:
        """The bundled baseline's probabilities for ``summaries`` (n, 1133)."""
        if self.baseline is None:
            raise BundleError("this ensemble has no baseline")
        if summaries is None:
            raise BundleError("this ensemble blends a baseline on summary features, and none "
                              "were given (summary.enabled)")
        return self.baseline.predict_proba(np.asarray(summaries, np.float32))

    def blend(self, cnn: np.ndarray, summaries: np.ndarray | None) -> np.ndarray:
        """``cnn`` probabilities blended with the baseline's on the same clips."""
        from fsd.evaluation.blend import blend

        return blend(cnn, self.baseline_probs(summaries), self.info.blend_weight)


def load_baseline(path: Path, info: BundleInfo):
    """The bundle's baseline model (None when it has none)."""
    if not info.baseline:
        return None
    from fsd.baseline.model import BaselineModel

    file = Path(path) / str(info.baseline.get("path") or BASELINE_FILE)
    if not file.is_file():
        raise BundleError(f"{path}: the manifest names a baseline, but {file} is missing")
    return BaselineModel.load(file)
