"""The MLflow edge: runs, the resolved config, per-epoch metrics, artifacts, and finding the
runs of earlier steps (and their artifacts) again.

Only this module, ``fsd/entrypoints/`` and the serving pyfunc import mlflow; every stage is a
plain function that takes a Config and returns plain results.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from fsd.config import Config, dump_config
from fsd.features.store import STORE_SECTIONS

log = logging.getLogger(__name__)

TAG_STAGE = "fsd.stage"
TAG_CONFIG = "fsd.config_name"
TAG_FEATURE_KEY = "fsd.feature_key"
TAG_TRAIN_KEY = "fsd.train_key"
TAG_FOLD = "fsd.fold"
TAG_FEATURES_RUN = "fsd.features_run"
TAG_STORE_DIR = "fsd.store_dir"
# The feature store's own key: the feature settings *and* the dataset's fingerprint (file names,
# sizes, mtimes), so changed clips never reuse old features or folds trained on them.
TAG_STORE_KEY = "fsd.store_key"
TAG_BASELINE = "fsd.baseline"  # the baseline model of a baseline run: logreg | hgb
TAG_BASELINE_KEY = "fsd.baseline_key"  # that model's settings (see baseline_key)
STAGE_BASELINE = "baseline"

# MLflow caps a param value at 6000 characters; long lists are still readable in config.yaml.
_PARAM_LIMIT = 500

# Sections that define the features; train keys add the model and training sections.
FEATURE_SECTIONS = ("data",) + STORE_SECTIONS
TRAIN_SECTIONS = FEATURE_SECTIONS + ("pca", "model", "train")


def feature_key(cfg: Config) -> str:
    return cfg.section_key(*FEATURE_SECTIONS)


def train_key(cfg: Config) -> str:
    """Identifies one training recipe across its folds (the fold number itself excluded)."""
    fold = cfg.train.fold
    cfg.train.fold = 0
    try:
        return cfg.section_key(*TRAIN_SECTIONS)
    finally:
        cfg.train.fold = fold


def baseline_key(cfg: Config, name: str) -> str:
    """Identifies baseline ``name``'s settings (only its own: another model's change, or the
    list of models, does not make a finished run stale). The data, features and folds are the
    store key's part."""
    import hashlib
    import json

    from fsd.baseline.model import model_params

    payload = json.dumps(model_params(name, cfg.baseline), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def set_experiment(cfg: Config) -> str:
    """Select (or create) the config's experiment; return its id."""
    if "MLFLOW_TRACKING_URI" not in os.environ and mlflow.get_tracking_uri().startswith("file:"):
        # MLflow 3 refuses the plain ./mlruns file store; sqlite is its own recommended default.
        mlflow.set_tracking_uri("sqlite:///mlflow.db")
    active = mlflow.active_run()
    launched_by = active.info.run_id if active else os.environ.get("MLFLOW_RUN_ID")
    if launched_by:
        # `mlflow run` (or a parent step) opened a run in the experiment it was told; that
        # experiment wins, so nested steps and later steps launched the same way find it.
        exp_id = MlflowClient().get_run(launched_by).info.experiment_id
        mlflow.set_experiment(experiment_id=exp_id)
        return exp_id
    exp = mlflow.set_experiment(cfg.experiment_name)
    return exp.experiment_id


@contextmanager
def stage_run(
    cfg: Config, stage: str, *, nested: bool = False, tags: dict[str, str] | None = None,
    run_name: str | None = None,
) -> Iterator[Run]:
    """A run for one stage, with the fully resolved config logged as params and config.yaml."""
    set_experiment(cfg)
    name = run_name or cfg.tracking.run_name or f"{stage}"
    all_tags = {TAG_STAGE: stage, TAG_CONFIG: cfg.name, **(tags or {})}
    with mlflow.start_run(run_name=name, nested=nested, tags=all_tags) as run:
        log_config(cfg)
        yield run


def log_config(cfg: Config) -> None:
    """Log every resolved field as a param (and the whole config as config.yaml).

    Under `mlflow run`, the -P values were already logged under the same dotted keys as the
    user typed them ("2" where the config holds 2.0); params cannot change, so those stay.
    """
    active = mlflow.active_run()
    logged = MlflowClient().get_run(active.info.run_id).data.params if active else {}
    params = {k: _param_value(v) for k, v in cfg.flat().items() if k not in logged}
    mlflow.log_params(params)
    mlflow.log_text(dump_config(cfg), "config.yaml")


def _param_value(v: Any) -> str:
    text = str(v)
    return text if len(text) <= _PARAM_LIMIT else text[: _PARAM_LIMIT - 3] + "..."


def epoch_logger(prefix: str = "") -> Callable[[str, int, dict[str, float]], None]:
    """An ``on_epoch`` callback logging ``<stage>/<metric>`` with the epoch as step."""

    def on_epoch(stage: str, epoch: int, metrics: dict[str, float]) -> None:
        mlflow.log_metrics(
            {f"{prefix}{stage}/{k}": float(v) for k, v in metrics.items() if v is not None},
            step=int(epoch),
        )

    return on_epoch


def log_files(paths: dict[str, Path] | list[Path], artifact_path: str | None = None) -> None:
    items = paths.values() if isinstance(paths, dict) else paths
    for p in items:
        if p and Path(p).exists():
            mlflow.log_artifact(str(p), artifact_path)


def find_runs(
    cfg: Config, stage: str, *, tags: dict[str, str] | None = None, finished_only: bool = True,
) -> list[Run]:
    """Runs of ``stage`` in the config's experiment carrying ``tags``, newest first."""
    exp_id = set_experiment(cfg)
    flt = f"tags.`{TAG_STAGE}` = '{stage}'"
    if finished_only:
        flt += " and attributes.status = 'FINISHED'"
    for key, value in (tags or {}).items():
        flt += f" and tags.`{key}` = '{value}'"
    return MlflowClient().search_runs(
        [exp_id], filter_string=flt, order_by=["attributes.start_time DESC"], max_results=1000
    )


def featurize_runs(cfg: Config) -> list[Run]:
    """Finished featurize runs whose features match ``cfg``, newest first."""
    return find_runs(cfg, "featurize", tags={TAG_FEATURE_KEY: feature_key(cfg)})


def finished_folds(cfg: Config, store_key: str | None = None) -> dict[int, Run]:
    """The newest finished fold run of ``cfg``'s training recipe, per fold, on one store.

    ``store_key`` None: the store of the newest such fold run (the latest features).
    """
    runs = find_runs(cfg, "train_fold", tags={TAG_TRAIN_KEY: train_key(cfg)})
    if store_key is None and runs:
        store_key = runs[0].data.tags.get(TAG_STORE_KEY, "")
    by_fold: dict[int, Run] = {}
    for r in runs:
        if r.data.tags.get(TAG_STORE_KEY, "") == store_key:
            by_fold.setdefault(int(r.data.tags[TAG_FOLD]), r)
    return by_fold


def finished_baselines(cfg: Config, store_key: str, name: str | None = None,
                       key: str | None = None) -> list[Run]:
    """Finished baseline runs on the store ``store_key``, newest first; ``name`` and ``key``
    (a :func:`baseline_key`) narrow them to one model and its settings."""
    tags = {TAG_STORE_KEY: store_key}
    if name:
        tags[TAG_BASELINE] = name
    if key:
        tags[TAG_BASELINE_KEY] = key
    return find_runs(cfg, STAGE_BASELINE, tags=tags)


def finished_baseline(cfg: Config, store_key: str, name: str) -> Run | None:
    """The newest finished run of baseline ``name`` with ``cfg``'s settings on this store."""
    runs = finished_baselines(cfg, store_key, name, baseline_key(cfg, name))
    return runs[0] if runs else None


def best_baseline(cfg: Config, store_key: str, metric: str = "oof_map3") -> Run | None:
    """The finished baseline run on this store with the highest ``metric`` (ties: newest)."""
    scored = [r for r in finished_baselines(cfg, store_key) if metric in r.data.metrics]
    # newest first, and max() keeps the first of equal scores
    return max(scored, key=lambda r: r.data.metrics[metric]) if scored else None


def download_artifacts(run_id: str, artifact_path: str, dst: Path) -> Path:
    """Fetch a run's artifact folder into ``dst`` (a local cache); returns the local path."""
    dst.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path,
                                                    dst_path=str(dst)))
