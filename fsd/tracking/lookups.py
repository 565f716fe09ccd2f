"""Finding the runs of earlier steps again: features, folds, baselines, and the feature store
they hold. The lookups every step shares, so no entry point borrows them from another."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from fsd.config import Config, ConfigError, load_config
from fsd.tracking.artifacts import STORE_ARTIFACT, download_artifacts
from fsd.tracking.keys import baseline_key, feature_key, train_key
from fsd.tracking.runs import set_experiment
from fsd.tracking.tags import (
    STAGE_BASELINE,
    TAG_BASELINE,
    TAG_BASELINE_KEY,
    TAG_FEATURE_KEY,
    TAG_FEATURES_RUN,
    TAG_FOLD,
    TAG_STAGE,
    TAG_STORE_DIR,
    TAG_STORE_KEY,
    TAG_STORE_RUN,
    TAG_STRICT_FAILED,
    TAG_TRAIN_KEY,
)

if TYPE_CHECKING:
    from mlflow.entities import Run

log = logging.getLogger(__name__)


def find_runs(
    cfg: Config, stage: str, *, tags: dict[str, str] | None = None, finished_only: bool = True,
) -> list[Run]:
    """Runs of ``stage`` in the config's experiment carrying ``tags``, newest first."""
    from mlflow.tracking import MlflowClient

    exp_id = set_experiment(cfg)
    flt = f"tags.`{TAG_STAGE}` = '{stage}'"
    if finished_only:
        flt += " and attributes.status = 'FINISHED'"
    for key, value in (tags or {}).items():
        flt += f" and tags.`{key}` = '{value}'"
    return MlflowClient().search_runs(
        [exp_id], filter_string=flt, order_by=["attributes.start_time DESC"], max_results=1000
    )


# --- features -------------------------------------------------------------------------------


def strict_failure(run: Run) -> str:
    """Why a featurize run's features must not be used ('' when they may)."""
    reason = run.data.tags.get(TAG_STRICT_FAILED, "")
    if reason:
        return (f"featurize run {run.info.run_id} failed --strict ({reason}; see "
                "reports/rejects.csv); fix the data, or run featurize again without --strict")
    return ""


def featurize_runs(cfg: Config) -> list[Run]:
    """Finished featurize runs whose features match ``cfg``, newest first; runs that failed
    ``--strict`` are left out."""
    runs = find_runs(cfg, "featurize", tags={TAG_FEATURE_KEY: feature_key(cfg)})
    return [r for r in runs if not r.data.tags.get(TAG_STRICT_FAILED)]


def run_holding_store(cfg: Config, store_key: str) -> str | None:
    """A finished featurize run that logged the store with this key, if any."""
    for run in featurize_runs(cfg):
        if run.data.tags.get(TAG_STORE_KEY) == store_key:
            return run.data.tags.get(TAG_STORE_RUN, run.info.run_id)
    return None


def features_run(cfg: Config, run_id: str = "") -> Run:
    """The featurize run a training step takes its features from: ``run_id`` (refused when
    it failed --strict, is unfinished or its feature key differs from ``cfg``'s), else the
    newest finished one with ``cfg``'s feature key."""
    import mlflow

    key = feature_key(cfg)
    if run_id:
        run = mlflow.get_run(run_id)
        refused = strict_failure(run)
        if refused:
            raise ConfigError(refused)
        if run.info.status != "FINISHED":
            raise ConfigError(f"featurize run {run_id} is {run.info.status}, not "
                              "FINISHED: its features may be incomplete; run featurize again")
        run_key = run.data.tags.get(TAG_FEATURE_KEY, "")
        if run_key != key:
            raise ConfigError(
                f"features of run {run_id} are stale for this config: feature key "
                f"{run_key or '?'} != {key} (data/audio/logmel/summary/folds settings differ); "
                "run featurize with this config"
            )
        return run
    runs = featurize_runs(cfg)
    failed = [r for r in find_runs(cfg, "featurize", finished_only=False,
                                   tags={TAG_FEATURE_KEY: key})[:1] if strict_failure(r)]
    if failed and (not runs or failed[0].info.start_time > runs[0].info.start_time):
        # the newest featurize of this config failed --strict: never fall back silently
        # to older features
        raise ConfigError(strict_failure(failed[0]))
    if not runs:
        raise ConfigError(
            f"no finished featurize run with feature key {key} in experiment "
            f"{cfg.experiment_name!r}: run `fsd featurize --config ...` "
            "(or `mlflow run . -e featurize`) with the same config first"
        )
    return runs[0]


def resolve_store(cfg: Config, features_run_id: str = ""):
    """The FeatureStore a training step should use, and the featurize run it came from.

    With ``features_run_id`` that run's features are used (see :func:`features_run`);
    otherwise the newest finished featurize run with the same feature key. The local store is
    used where it exists (same machine); otherwise the run's ``features`` artifacts are
    downloaded into the local cache, so a fold can train on another machine.
    """
    from fsd.features.store import FeatureStore, StoreError

    run = features_run(cfg, features_run_id)
    store_key = run.data.tags.get(TAG_STORE_KEY) or None
    local = run.data.tags.get(TAG_STORE_DIR, "")
    cache = Path(cfg.store.cache_dir) / "features" / (store_key or feature_key(cfg))
    for candidate in (Path(local) if local else None, cache):
        if candidate is not None and candidate.exists():
            try:
                return FeatureStore.open(candidate, expected_key=store_key), run.info.run_id
            except StoreError as exc:
                log.warning("store %s unusable (%s); fetching from MLflow", candidate, exc)
    holder = run.data.tags.get(TAG_STORE_RUN, run.info.run_id)
    log.info("downloading features of run %s into %s", holder, cache)
    cache.parent.mkdir(parents=True, exist_ok=True)
    # A private download folder, moved into place in one step: folds started together on one
    # machine each fetch, and the first complete copy wins.
    with tempfile.TemporaryDirectory(dir=cache.parent, prefix=".download-") as tmp:
        downloaded = download_artifacts(holder, STORE_ARTIFACT, Path(tmp))
        try:
            os.replace(downloaded, cache)
        except OSError:
            if not cache.exists():
                raise
    return FeatureStore.open(cache, expected_key=store_key), run.info.run_id


# --- folds ----------------------------------------------------------------------------------


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


def fold_runs(cfg: Config, run_ids: list[str] | None = None) -> dict[int, Run]:
    """The finished fold runs of this training recipe, one per fold (the newest of each).

    Explicit ``run_ids`` are checked to be fold runs of one training; an incomplete or mixed
    set is refused with a message saying what is missing or different.
    """
    import mlflow

    if run_ids:
        runs = [mlflow.get_run(r) for r in run_ids]
        keys = {(r.data.tags.get(TAG_TRAIN_KEY), r.data.tags.get(TAG_STORE_KEY)) for r in runs}
        if len(keys) != 1:
            raise ConfigError(
                f"fold runs come from different trainings or features (train/store keys "
                f"{sorted(map(str, keys))})")
        not_done = [r.info.run_id for r in runs if r.info.status != "FINISHED"]
        if not_done:
            raise ConfigError(f"fold runs not finished: {not_done}")
        by_fold: dict[int, Run] = {}
        for r in runs:
            fold = int(r.data.tags[TAG_FOLD])
            if fold in by_fold:
                raise ConfigError(f"runs {by_fold[fold].info.run_id} and {r.info.run_id} both "
                                  f"trained fold {fold}; name one run per fold")
            by_fold[fold] = r
    else:
        by_fold = finished_folds(cfg)
    expected = set(range(cfg.folds.n_folds))
    missing = sorted(expected - set(by_fold))
    if missing:
        raise ConfigError(
            f"incomplete set of fold runs for training key {train_key(cfg)}: folds "
            f"{missing} are missing (have {sorted(by_fold)}); train them with "
            "`fsd train-fold --fold K` using the same config"
        )
    return dict(sorted(by_fold.items()))


def select_fold_runs(cfg: Config, run_ids: list[str] | None) -> dict[int, Run]:
    """The fold runs to combine; refuses duplicates, mixed trainings and mixed features."""
    if run_ids and len(set(run_ids)) != len(run_ids):
        raise ConfigError(f"--fold-runs lists a run twice: {run_ids}")
    if run_ids:
        folds = [_get_run(r).data.tags.get(TAG_FOLD) for r in run_ids]
        dup = sorted({f for f in folds if folds.count(f) > 1}, key=str)
        if dup:
            raise ConfigError(f"--fold-runs gives more than one run for fold(s) {dup}")
        if None in folds:
            raise ConfigError(f"run {run_ids[folds.index(None)]} is not a train_fold run "
                              "(no fsd.fold tag)")
    runs = fold_runs(cfg, run_ids)
    feats = {r.data.tags.get(TAG_FEATURES_RUN, "") for r in runs.values()}
    if len(feats) != 1:
        raise ConfigError(f"fold runs were trained on different featurize runs {sorted(feats)}; "
                          "retrain the folds on one feature store")
    return runs


def _get_run(run_id: str) -> Run:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.get_run(run_id)
    except MlflowException as exc:
        raise ConfigError(f"--fold-runs: run {run_id!r} not found in {mlflow.get_tracking_uri()} "
                          f"({exc.message.splitlines()[0] if exc.message else exc})") from None


def training_config(cfg: Config, run: Run) -> Config:
    """The config the fold run ``run`` was trained with (features, model), with ``cfg``'s
    ensemble, baseline, tracking and output settings: serving must featurize exactly as
    training did, and the baselines to blend with are this run's choice."""
    import mlflow

    try:
        text = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/config.yaml")
    except Exception as exc:  # an old run without config.yaml: fall back to the given config
        log.warning("fold run %s has no readable config.yaml (%s); using this config",
                    run.info.run_id, exc)
        return cfg
    from fsd.train.experimentdir import ExperimentDir

    path = ExperimentDir.of(cfg).training_config(run.info.run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    trained = load_config(path)
    trained.name, trained.output_dir = cfg.name, cfg.output_dir
    trained.ensemble, trained.tracking, trained.store = cfg.ensemble, cfg.tracking, cfg.store
    trained.baseline = cfg.baseline
    return trained


# --- baselines ------------------------------------------------------------------------------


def finished_baselines(cfg: Config, store_key: str, name: str | None = None,
                       key: str | None = None) -> list[Run]:
    """Finished baseline runs on the store ``store_key``, newest first; ``name`` and ``key``
    (a :func:`~fsd.tracking.keys.baseline_key`) narrow them to one model and its settings."""
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


def blend_candidates(cfg: Config, store_key: str) -> list[Run]:
    """The baseline runs the ensemble may blend with, best alone first: the newest finished run
    of each model in ``baseline.models`` with the current settings; when there is none, every
    finished baseline run on this store (a standalone ``fsd ensemble`` after older runs)."""
    runs = [r for name in cfg.baseline.models
            if (r := finished_baseline(cfg, store_key, name)) is not None]
    if not runs:
        runs = finished_baselines(cfg, store_key)
    scored = [r for r in runs if "oof_map3" in r.data.metrics]
    return sorted(scored, key=lambda r: -r.data.metrics["oof_map3"])
