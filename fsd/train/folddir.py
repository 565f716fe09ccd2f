"""One fold's folder: the only place that knows its file names.

Training writes it (:mod:`fsd.train.fit`), the train_fold step logs it as the run's ``fold/``
artifacts, the ensemble reads the downloaded copy and the bundle keeps a part of it; all of
them name the files through :class:`FoldDir`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class _File:
    """One entry of the folder: on the class its name (``FoldDir.model == "model.keras"``),
    on a FoldDir its path."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, folder: FoldDir | None, owner: type) -> Any:
        return self.name if folder is None else folder.path / self.name


@dataclass(frozen=True)
class FoldDir:
    """The files of one fold under ``path`` (a work folder, a download, a bundle's fold)."""

    path: Path

    model = _File("model.keras")  # the network the fold keeps
    projector = _File("projector.joblib")  # its scaler + PCA of the summary features
    history = _File("history.csv")
    oof = _File("oof.csv")  # the held-out fold's probabilities
    result = _File("result.json")  # the fold's measurements and counts
    stage1_model = _File("stage1.keras")
    checkpoint = _File("checkpoint")
    plots = _File("plots")
    run_id_file = _File("mlflow_run_id")  # the MLflow run that last wrote the folder

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def logged(self) -> list[Path]:
        """What a fold's run logs (artifact folder ``fold/``), in this order."""
        return [self.model, self.projector, self.history, self.oof, self.result]

    def resumable(self) -> list[Path]:
        """What training on another machine needs to continue this fold where it stands: the
        checkpoint, the history so far, and the stage networks already kept (stage 2 starts
        from stage 1's, and the fold's choice between them reads both)."""
        return [self.checkpoint, self.history, self.stage1_model, self.model]

    def read_result(self) -> dict[str, Any]:
        return json.loads(self.result.read_text())

    def run_id(self) -> str:
        """The run that last wrote the folder ('' when none did)."""
        try:
            return self.run_id_file.read_text().strip()
        except OSError:
            return ""
