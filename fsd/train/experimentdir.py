"""One experiment's output folder, ``<output_dir>/<name>``: the only place that knows where
each step writes under it (as :class:`fsd.train.folddir.FoldDir` knows a fold's files).

::

    <experiment>/train/<train key>-<store key[:8]>/fold_<k>/   a fold's FoldDir
    <experiment>/baseline/<model>-<store key[:8]>/<run id>/    a baseline run's outputs
    <experiment>/ensemble/<train key>/                         an ensemble's work (downloads)
    <experiment>/ensemble/.config-<fold run id>.yaml           a fold run's training config
    <experiment>/pipeline/config-<main run id>.yaml            the config fsd main's workers read
    <experiment>/sweep/optuna.db, sweep/<study>/               a sweep's storage, its trials
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ExperimentDir:
    """The folders of one experiment under ``path`` (``Config.experiment_dir``)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def of(cls, cfg) -> ExperimentDir:
        """The experiment folder of a :class:`fsd.config.Config`."""
        return cls(cfg.experiment_dir)

    def fold(self, train_key: str, store_key: str, fold: int) -> Path:
        """A fold's work folder, keyed by the recipe and the features (a FoldDir's path)."""
        return self.path / "train" / f"{train_key}-{store_key[:8]}" / f"fold_{fold}"

    def baseline(self, model: str, store_key: str, run_id: str) -> Path:
        """A baseline run's outputs (its plots, out-of-fold tables, model)."""
        return self.path / "baseline" / f"{model}-{store_key[:8]}" / run_id

    def ensemble(self, train_key: str) -> Path:
        """An ensemble's work folder for one training recipe ('adhoc' without a key)."""
        return self.path / "ensemble" / (train_key or "adhoc")

    def training_config(self, fold_run_id: str) -> Path:
        """Where a fold run's config.yaml is read back (hidden beside the ensembles)."""
        return self.path / "ensemble" / f".config-{fold_run_id}.yaml"

    def pipeline_config(self, main_run_id: str) -> Path:
        """The resolved config fsd main writes for its fold workers."""
        return self.path / "pipeline" / f"config-{main_run_id}.yaml"

    @property
    def sweep(self) -> Path:
        return self.path / "sweep"

    def study(self, study_name: str) -> Path:
        """A study's trial workdirs and best config (its name made a plain folder name)."""
        return self.sweep / re.sub(r"[^A-Za-z0-9._-]+", "_", study_name)

    @property
    def optuna_db(self) -> Path:
        """A sweep's default storage (a sqlite file)."""
        return self.sweep / "optuna.db"
