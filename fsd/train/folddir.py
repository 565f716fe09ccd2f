"""One fold's folder: the only place that knows its file names.

Training writes it (:mod:`fsd.train.fit`), the train_fold step logs it as the run's ``fold/``
artifacts, and the ensemble reads the downloaded copy and the bundle keeps a part of it; all
of them name the files through :class:`FoldDir`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class FoldDir:
    """The files of one fold under ``path`` (a work folder, a download, a bundle's fold)."""

    path: Path

    MODEL = "model.keras"  # the network the fold keeps
    PROJECTOR = "projector.joblib"  # its scaler + PCA of the summary features
    HISTORY = "history.csv"
    OOF = "oof.csv"  # the held-out fold's probabilities
    RESULT = "result.json"  # the fold's measurements and counts
    STAGE1_MODEL = "stage1.keras"
    CHECKPOINT = "checkpoint"
    PLOTS = "plots"
    RUN_ID = "mlflow_run_id"  # the MLflow run that last wrote the folder
    # what a fold's run logs (artifact folder ``fold/``), in this order
    LOGGED = (MODEL, PROJECTOR, HISTORY, OOF, RESULT)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def model(self) -> Path:
        return self.path / self.MODEL

    @property
    def projector(self) -> Path:
        return self.path / self.PROJECTOR

    @property
    def history(self) -> Path:
        return self.path / self.HISTORY

    @property
    def oof(self) -> Path:
        return self.path / self.OOF

    @property
    def result(self) -> Path:
        return self.path / self.RESULT

    @property
    def stage1_model(self) -> Path:
        return self.path / self.STAGE1_MODEL

    @property
    def checkpoint(self) -> Path:
        return self.path / self.CHECKPOINT

    @property
    def plots(self) -> Path:
        return self.path / self.PLOTS

    @property
    def run_id_file(self) -> Path:
        return self.path / self.RUN_ID

    def read_result(self) -> dict[str, Any]:
        return json.loads(self.result.read_text())

    def run_id(self) -> str:
        """The run that last wrote the folder ('' when none did)."""
        try:
            return self.run_id_file.read_text().strip()
        except OSError:
            return ""
