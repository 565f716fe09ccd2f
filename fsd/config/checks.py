"""The rules that tie config fields together (a field's own rule stands beside it in
:mod:`fsd.config.schema`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fsd.config.errors import ConfigError

# A fsd.config.schema.Config (named loosely: the schema imports these checks).
Config = Any


def _crops(c: Config) -> bool:
    return not (c.train.crop_min or c.train.crop_max) or 0 < c.train.crop_min < c.train.crop_max


# Rules that tie fields together: (holds, key, what it needs).
CROSS_CHECKS: list[tuple[Callable[[Config], bool], str, Any]] = [
    (lambda c: c.data.source != "fsdkaggle2018" or bool(c.data.root), "data.root",
     "is required for source fsdkaggle2018"),
    (lambda c: c.data.source != "folder" or bool(c.data.audio_dir), "data.audio_dir",
     "is required for source folder (with data.csv, or empty data.csv for class subfolders)"),
    (lambda c: c.data.source != "folder" or bool(c.data.csv) or not c.folds.group_column,
     "folds.group_column", "needs a CSV that gives groups (data.csv); class subfolders "
     "(data.csv empty) give none"),
    (lambda c: c.audio.max_seconds > c.audio.min_seconds, "audio.max_seconds",
     "must exceed audio.min_seconds"),
    (lambda c: c.logmel.fmin < c.logmel.fmax <= c.logmel.sample_rate / 2, "logmel.fmax",
     "must exceed logmel.fmin and not exceed half of logmel.sample_rate"),
    (lambda c: c.logmel.norm_max > c.logmel.norm_min, "logmel.norm_max",
     "must exceed logmel.norm_min"),
    (lambda c: c.summary.n_mfcc <= c.summary.n_mels, "summary.n_mfcc",
     "must not exceed summary.n_mels"),
    (lambda c: c.pca.n_components < 1 or float(c.pca.n_components).is_integer(),
     "pca.n_components", "must be a fraction in (0, 1) or a whole number of components"),
    (lambda c: c.train.fold < c.folds.n_folds or c.folds.use_dataset_folds, "train.fold",
     lambda c: f"must be in [0, {c.folds.n_folds}) (folds.n_folds), got {c.train.fold}"),
    (_crops, "train.crop_min/crop_max", "need 0 < crop_min < crop_max (or both 0 to derive "
     "them)"),
    (lambda c: c.train.erase_area_min <= c.train.erase_area_max, "train.erase_area_min",
     "must not exceed train.erase_area_max"),
    (lambda c: c.train.erase_aspect_min <= c.train.erase_aspect_max, "train.erase_aspect_min",
     "must not exceed train.erase_aspect_max"),
    (lambda c: all(s.cyclic_lr_min <= s.cyclic_lr_max for s in (c.train.stage1, c.train.stage2)),
     "train.stage1/stage2.cyclic_lr_min", "must not exceed cyclic_lr_max"),
    (lambda c: c.model.backbone == "mobilenetv2" or c.model.backbone_weights.lower()
     in ("", "none"), "model.backbone_weights",
     "applies to the mobilenetv2 backbone only (the cnn trains from scratch)"),
    (lambda c: c.baseline.extratrees_max_leaf_nodes != 1, "baseline.extratrees_max_leaf_nodes",
     "must be 0 (unbounded) or at least 2"),
    (lambda c: bool(c.baseline.vote_members) or "vote" not in c.baseline.models,
     "baseline.vote_members", "must not be empty when baseline.models holds vote"),
    (lambda c: c.sweep.crop_min_high < c.sweep.crop_max_high, "sweep.crop_min_high",
     "must be below sweep.crop_max_high so min < max is reachable"),
    (lambda c: c.sweep.crop_min_low <= c.sweep.crop_min_high, "sweep.crop_min_low",
     "must not exceed sweep.crop_min_high"),
    (lambda c: c.sweep.crop_max_low <= c.sweep.crop_max_high, "sweep.crop_max_low",
     "must not exceed sweep.crop_max_high"),
    (lambda c: c.sweep.alpha1_min <= c.sweep.alpha1_max, "sweep.alpha1_min",
     "must not exceed sweep.alpha1_max"),
    (lambda c: c.sweep.alpha2_min <= c.sweep.alpha2_max, "sweep.alpha2_min",
     "must not exceed sweep.alpha2_max"),
]


def cross_check(config: Config) -> None:
    """Raise ConfigError naming the key of the first cross-check ``config`` fails."""
    for ok, key, message in CROSS_CHECKS:
        if not ok(config):
            raise ConfigError(f"{key} {message(config) if callable(message) else message}")
