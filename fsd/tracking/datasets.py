"""The data a run reads, as MLflow datasets: the feature store's clip table (the clips, their
labels and folds), whole or one fold's validation clips.

Every step logs the dataset it read (``mlflow.log_input``), and the metrics that score a model
name the dataset they were measured on (``mlflow.log_metric(..., dataset=...)``): a fold's
validation figures its fold's clips, out-of-fold figures the whole table. The same table gives
the same digest in every step, so the UI shows one dataset across featurize, the folds, the
baselines and the ensemble.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from fsd.config import Config

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ("fname", "label", "fold", "verified", "seconds")
# the contexts a run reads a dataset in (the UI shows them beside the dataset)
TRAINING, VALIDATION, FEATURIZE = "training", "validation", "featurize"


def dataset_name(cfg: Config, feature_key: str, fold: int | None = None) -> str:
    base = f"{cfg.data.source}-{feature_key}"
    return base if fold is None else f"{base}-fold{fold}"


def store_dataset(cfg: Config, index: pd.DataFrame, feature_key: str, fold: int | None = None):
    """The clip table of a feature store (``fold``: only that fold's clips) as an MLflow
    dataset; its source is the data's location, its targets the labels."""
    import mlflow

    frame = index[[c for c in COLUMNS if c in index.columns]]
    if fold is not None:
        frame = frame[frame["fold"] == fold].reset_index(drop=True)
    with warnings.catch_warnings():
        # MLflow hints about integer columns and ambiguous local sources; neither applies here.
        warnings.simplefilter("ignore", UserWarning)
        return mlflow.data.from_pandas(frame, source=dataset_source(cfg),
                                       name=dataset_name(cfg, feature_key, fold), targets="label")


def log_dataset(dataset, context: str) -> None:
    """Log ``dataset`` as an input of the active run, read in ``context``."""
    import mlflow

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the same hints as in store_dataset
        mlflow.log_input(dataset, context=context)


def dataset_source(cfg: Config) -> str:
    """Where the data lives (a local path MLflow records as the dataset's source)."""
    if cfg.data.source == "fsdkaggle2018":
        return str(Path(cfg.data.root).resolve())
    if cfg.data.source == "folder":
        return str(Path(cfg.data.csv).resolve())
    from fsd.data.synthetic import CSV_NAME, sample_key

    # the generated sample's CSV (featurize generated it; later steps only name it)
    key = sample_key(cfg.data.synthetic_clips_per_class, cfg.data.synthetic_seed,
                     cfg.audio.sample_rate)
    return str((Path(cfg.store.cache_dir) / f"synthetic-{key}" / CSV_NAME).resolve())
