"""The MLflow edge. Only this package, ``fsd/entrypoints/`` and the serving pyfunc and
registry import mlflow; every stage is a plain function that takes a Config and returns plain
results.

Its rooms: ``tags`` (what runs are tagged with), ``keys`` (pure: whether two runs did the same
work), ``runs`` (open, resume, reap the dead), ``lookups`` (find earlier steps' runs and their
feature store), ``params`` and ``epochs`` (what a run logs), ``artifacts`` (log and fetch
files), ``datasets`` (the data a run reads, as MLflow datasets), ``models`` (fold CNNs and
baselines as MLflow LoggedModels, the metrics linked to them), ``descriptions`` and ``links``
(what the UI shows), ``experiment`` (the experiment's view and description). ``from fsd import
tracking`` gives the names below, so a step reads ``tracking.stage_run``, ``tracking.TAG_FOLD``.

Importing this package costs nothing: the tags are plain strings, and every other name loads
its module (and with it mlflow) on first use, so ``fsd --help`` never imports mlflow.
"""

from __future__ import annotations

import importlib
from typing import Any

from fsd.tracking import tags
from fsd.tracking.tags import *  # noqa: F403  (every TAG_* name, listed in tags.__all__)

# name -> the module that defines it (loaded on first access: PEP 562)
_LAZY = {
    "MlflowClient": "mlflow.tracking",
    "process_alive": "fsd.processes",
    **dict.fromkeys(("download_artifacts", "log_files", "log_frame"), "fsd.tracking.artifacts"),
    **dict.fromkeys(("data_summary", "describe", "fold_description"),
                    "fsd.tracking.descriptions"),
    **dict.fromkeys(("epoch_logger", "replay_history"), "fsd.tracking.epochs"),
    **dict.fromkeys(("baseline_key", "feature_key", "train_key"), "fsd.tracking.keys"),
    **dict.fromkeys(("print_ui_urls", "run_link", "run_url", "runs_url"), "fsd.tracking.links"),
    **dict.fromkeys(("featurize_runs", "find_runs", "finished_baseline", "finished_baselines",
                     "finished_folds", "resolve_store", "strict_failure"),
                    "fsd.tracking.lookups"),
    **dict.fromkeys(("fold_summary", "log_config", "log_new_params", "stage_params"),
                    "fsd.tracking.params"),
    **dict.fromkeys(("open_run", "process_tags", "reap_dead_runs", "run_process_gone",
                     "set_experiment", "stage_run", "system_metrics"), "fsd.tracking.runs"),
    **dict.fromkeys(("log_run_metrics",), "fsd.tracking.models"),
    **dict.fromkeys(("checkpointed_attempt", "fetch_checkpoint", "upload_checkpoint"),
                    "fsd.tracking.checkpoints"),
}
_SUBMODULES = ("artifacts", "checkpoints", "datasets", "descriptions", "epochs", "experiment",
               "keys", "links", "lookups", "models", "params", "runs")

__all__ = [*tags.__all__, *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBMODULES})
