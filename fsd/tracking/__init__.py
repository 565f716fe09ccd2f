"""The MLflow edge. Only this package, ``fsd/entrypoints/``, ``fsd/cluster/`` and the serving
pyfunc and registry import mlflow; every stage is a plain function that takes a Config and
returns plain results.

Its rooms: ``tags`` (what runs are tagged with), ``keys`` (pure: whether two runs did the same
work), ``runs`` (open, resume, reap the dead), ``lookups`` (find earlier steps' runs and their
feature store), ``params`` and ``epochs`` (what a run logs), ``artifacts`` (log and fetch
files), ``datasets`` (the data a run reads, as MLflow datasets), ``models`` (fold CNNs and
baselines as MLflow LoggedModels, the metrics linked to them), ``descriptions`` and ``links``
(what the UI shows), ``experiment`` (the experiment's view and description). ``from fsd import
tracking`` gives the names below, so a step reads ``tracking.stage_run``, ``tracking.TAG_FOLD``.

Importing this package is cheap: every module here imports mlflow and pandas inside the
functions that use them, so ``fsd --help`` never imports mlflow.
"""

from __future__ import annotations

from fsd.tracking import datasets, experiment, models, tags
from fsd.tracking.artifacts import download_artifacts, log_files, log_frame
from fsd.tracking.descriptions import (
    HEADLINE,
    baseline_description,
    baselines_description,
    data_summary,
    describe,
    ensemble_description,
    ensemble_model_description,
    ensemble_scores_line,
    featurize_description,
    fold_description,
    pipeline_description,
    sweep_description,
    trial_description,
)
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
from fsd.tracking.models import log_run_metrics
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
    *tags.__all__, "HEADLINE", "baseline_description", "baseline_key", "baselines_description",
    "data_summary", "datasets", "describe", "download_artifacts", "ensemble_description",
    "ensemble_model_description", "ensemble_scores_line", "epoch_logger", "experiment",
    "feature_key", "featurize_description", "featurize_runs", "find_runs", "finished_baseline",
    "finished_baselines", "finished_folds", "fold_description", "fold_summary", "log_config",
    "log_files", "log_frame", "log_new_params", "log_run_metrics", "models", "open_run",
    "pipeline_description", "print_ui_urls", "process_tags", "reap_dead_runs", "replay_history",
    "resolve_store", "run_link", "run_process_gone", "run_url", "runs_url", "set_experiment",
    "stage_params", "stage_run", "strict_failure", "sweep_description", "system_metrics",
    "train_key", "trial_description",
]
