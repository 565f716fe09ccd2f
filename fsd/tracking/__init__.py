"""The MLflow edge. Only this package, ``fsd/entrypoints/`` and the serving pyfunc and
registry import mlflow; every stage is a plain function that takes a Config and returns plain
results.

Its rooms: ``tags`` (what runs are tagged with), ``keys`` (pure: whether two runs did the same
work), ``runs`` (open, resume, reap the dead), ``lookups`` (find earlier steps' runs and their
feature store), ``params`` and ``epochs`` (what a run logs), ``artifacts`` (log and fetch
files), ``descriptions`` and ``links`` (what the UI shows). ``from fsd import tracking`` gives
the names below, so a step reads ``tracking.stage_run``, ``tracking.TAG_FOLD``.
"""

from mlflow.tracking import MlflowClient  # noqa: F401  (callers use tracking.MlflowClient)

from fsd.processes import process_alive
from fsd.tracking import tags
from fsd.tracking.artifacts import download_artifacts, log_files, log_frame
from fsd.tracking.descriptions import data_summary, describe, fold_description
from fsd.tracking.epochs import epoch_logger, replay_history
from fsd.tracking.keys import baseline_key, feature_key, train_key
from fsd.tracking.links import print_ui_urls, run_link, run_url, runs_url
from fsd.tracking.lookups import (
    featurize_runs,
    find_runs,
    finished_baseline,
    finished_baselines,
    finished_folds,
    resolve_store,
    strict_failure,
)
from fsd.tracking.params import fold_summary, log_config, log_new_params, stage_params
from fsd.tracking.runs import (
    open_run,
    process_tags,
    reap_dead_runs,
    run_process_gone,
    set_experiment,
    stage_run,
    system_metrics,
)
from fsd.tracking.tags import *  # noqa: F403  (every TAG_* name, listed in tags.__all__)

__all__ = [
    *tags.__all__,
    "baseline_key", "data_summary", "describe", "download_artifacts", "epoch_logger",
    "feature_key", "featurize_runs", "find_runs", "finished_baseline", "finished_baselines",
    "finished_folds", "fold_description", "fold_summary", "log_config", "log_files",
    "log_frame", "log_new_params", "open_run", "print_ui_urls", "process_alive",
    "process_tags", "reap_dead_runs", "replay_history", "resolve_store", "run_link",
    "run_process_gone", "run_url", "runs_url", "set_experiment", "stage_params", "stage_run",
    "strict_failure", "system_metrics", "train_key",
]
