"""A fold's data: which rows train and which validate, the validation clips, the crop
limits, and the scaler + PCA of the summary features (fitted here, or reloaded on resume)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fsd.config import Config
from fsd.model.tta import spaced_lengths
from fsd.train.batches import FeatureSource, load_clips, resolve_crop_limits
from fsd.train.checkpoint import TrainError
from fsd.train.folddir import FoldDir

log = logging.getLogger(__name__)


@dataclass
class FoldData:
    """A fold's rows, validation clips, crop limits and PCA inputs, ready to train on."""

    labels: list[str]
    train_rows: np.ndarray
    val_rows: np.ndarray
    val_y: np.ndarray
    val_clips: list[np.ndarray]
    n_mels: int
    crop: tuple[int, int]
    val_lengths: list[int]
    pca_train: np.ndarray
    pca_val: np.ndarray
    projector_path: Path


def check_store(store: FeatureSource, fold: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Rows of the training and validation folds; clear errors for unusable stores."""
    for attr in ("index", "labels", "logmel"):
        if not hasattr(store, attr):
            raise TrainError(f"the feature store has no {attr!r}; was featurize run?")
    index = store.index
    missing = {"label_id", "fold", "verified", "frames"} - set(index.columns)
    if missing:
        raise TrainError(f"the feature store index lacks columns {sorted(missing)}")
    labels = list(store.labels)
    if len(index) == 0:
        raise TrainError("the feature store holds no clips")
    label_ids = index["label_id"].to_numpy(np.int64)
    if label_ids.min() < 0 or label_ids.max() >= len(labels):
        raise TrainError(f"label ids run {label_ids.min()}..{label_ids.max()} but the store "
                         f"has {len(labels)} labels")
    folds = index["fold"].to_numpy(np.int64)
    present = sorted(int(f) for f in np.unique(folds) if f >= 0)
    if fold not in present:
        raise TrainError(f"fold {fold} is not a fold of this feature store (its folds: "
                         f"{present}); pick train.fold among them")
    # Rows the featurizer could not process (ok=False) or that hold no frames cannot train.
    usable = index["frames"].to_numpy(np.int64) > 0
    if "ok" in index.columns:
        usable &= index["ok"].to_numpy(bool)
    if not usable.all():
        log.warning("skipping %d clips without features", int((~usable).sum()))
    val_rows = np.flatnonzero((folds == fold) & usable)
    train_rows = np.flatnonzero((folds != fold) & usable)
    if len(val_rows) == 0:
        raise TrainError(f"fold {fold} holds no clips with features")
    if len(train_rows) == 0:
        raise TrainError(f"holding out fold {fold} leaves no training clips")
    if len(np.unique(label_ids[train_rows])) < 2:
        raise TrainError("the training folds hold fewer than 2 classes")
    return train_rows, val_rows, labels


def _summary(store: FeatureSource) -> np.ndarray:
    try:
        summary = store.summary
    except Exception as exc:
        raise TrainError(f"the feature store has no summary features ({exc}); stage 2 needs "
                         "them: featurize with summary.enabled=true") from None
    if summary is None:
        raise TrainError("the feature store has no summary features; stage 2 needs them: "
                         "featurize with summary.enabled=true")
    summary = np.asarray(summary)
    if summary.ndim != 2 or len(summary) != len(store.index):
        raise TrainError(f"summary features have shape {summary.shape}, expected "
                         f"({len(store.index)}, n_features)")
    return summary


def _fit_projector(cfg: Config, x: np.ndarray, path: Path):
    from fsd.features.projection import SummaryProjector

    try:
        # caps n_components at min(clips, features) itself, for small data like the sample
        projector = SummaryProjector.from_config(cfg.pca).fit(x)
    except ValueError as exc:
        raise TrainError(f"cannot fit the summary projection: {exc}") from None
    projector.save(path)
    return projector


def prepare(cfg: Config, store: FeatureSource, fold: int, workdir: Path,
             resuming: bool) -> FoldData:
    train_rows, val_rows, labels = check_store(store, fold)
    summary = _summary(store)
    try:
        probe = np.asarray(store.logmel(int(train_rows[0])))
    except Exception as exc:
        raise TrainError(f"cannot read log-mel features from the store: {exc}") from None
    if probe.ndim != 2:
        raise TrainError(f"log-mels must be (frames, n_mels), got shape {probe.shape}")
    frames = store.index["frames"].to_numpy(np.int64)[train_rows]
    crop = resolve_crop_limits(cfg.train, dict(getattr(store, "meta", {}) or {}), frames)

    from fsd.features.projection import SummaryProjector

    projector_path = FoldDir(workdir).projector
    if resuming and projector_path.exists():
        projector = SummaryProjector.load(projector_path)
    else:
        fit_rows = train_rows if cfg.pca.fit_on == "train_folds" else np.arange(len(summary))
        projector = _fit_projector(cfg, summary[fit_rows], projector_path)
    pca_train = np.asarray(projector.transform(summary[train_rows]), dtype=np.float32)
    pca_val = np.asarray(projector.transform(summary[val_rows]), dtype=np.float32)
    val_clips = load_clips(store, val_rows)
    val_y = store.index["label_id"].to_numpy(np.int64)[val_rows]
    val_lengths = spaced_lengths(cfg.train.val_lengths, cfg.train.val_n_lengths, *crop)
    return FoldData(labels, train_rows, val_rows, val_y, val_clips, probe.shape[1], crop,
                     val_lengths, pca_train, pca_val, projector_path)


def model_key(cfg: Config, data: FoldData) -> str:
    """What a checkpoint's network must match to be resumed: the model and PCA settings and
    the input sizes they met."""
    return json.dumps({"model": cfg.to_dict()["model"], "pca": cfg.to_dict()["pca"],
                       "pca_dim": int(data.pca_train.shape[1]), "n_mels": data.n_mels},
                      sort_keys=True)
