"""Artifacts: the folder names steps log under, logging files and tables, and fetching another
run's artifacts into a local cache."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


FOLD_ARTIFACT = "fold"  # a fold run's FoldDir.logged() files
STORE_ARTIFACT = "features"  # a featurize run's feature store
OOF_ARTIFACT = "oof"  # out-of-fold tables
OOF_PROBS = "oof_probabilities.csv"  # a baseline's out-of-fold probabilities, under oof/
MODEL_ARTIFACT = "model"  # a baseline's final model, under model/
MODEL_FILE = "baseline.joblib"
EXPORT_ARTIFACT = "export"  # `fsd export` output, under export/<format>/ of the ensemble run


def log_files(paths: dict[str, Path] | list[Path], artifact_path: str | None = None) -> None:
    import mlflow

    items = paths.values() if isinstance(paths, dict) else paths
    for p in items:
        if p and Path(p).exists():
            mlflow.log_artifact(str(p), artifact_path)


def log_frame(frame: pd.DataFrame, path: Path, artifact_path: str) -> None:
    """Write ``frame`` as CSV to ``path`` and log it under ``artifact_path``."""
    import mlflow

    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    mlflow.log_artifact(str(path), artifact_path)


def download_artifacts(run_id: str, artifact_path: str, dst: Path) -> Path:
    """Fetch a run's artifact folder into ``dst`` (a local cache); returns the local path."""
    import mlflow

    dst.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path,
                                                    dst_path=str(dst)))


def load_oof_probabilities(run_id: str, dst: Path) -> pd.DataFrame:
    """The out-of-fold probabilities a baseline run logged."""
    import pandas as pd

    local = download_artifacts(run_id, f"{OOF_ARTIFACT}/{OOF_PROBS}", dst)
    return pd.read_csv(local, keep_default_na=False, dtype={"fname": str, "label": str})


def download_baseline_model(run_id: str, dst: Path) -> Path:
    """The final model a baseline run logged, downloaded into ``dst``."""
    return download_artifacts(run_id, f"{MODEL_ARTIFACT}/{MODEL_FILE}", dst)


def log_store(store_dir: Path) -> None:
    """Log a feature store under ``features/``: the consolidated files other machines need.
    Shards are a resume aid for this machine; its plots and reports are logged once, under
    plots/ and reports/."""
    import mlflow

    for child in sorted(store_dir.iterdir()):
        if child.name in ("shards", "plots", "rejects.csv", "folds.csv") or child.name.startswith("."):
            continue
        if child.is_dir():
            mlflow.log_artifacts(str(child), f"{STORE_ARTIFACT}/{child.name}")
        else:
            mlflow.log_artifact(str(child), STORE_ARTIFACT)
