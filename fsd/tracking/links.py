"""Links into the MLflow UI: an experiment's runs, one run, and the list ``make ui`` prints."""

from __future__ import annotations

import os
from pathlib import Path

from fsd.tracking.tags import UI_URL

# Without it MLflow 3 opens a run page in the GenAI view (its sidebar: traces, judges...).
_ML_VIEW = "?workflowType=machine_learning"


def runs_url(experiment_id: str, base: str = "") -> str:
    """The MLflow UI page of the experiment's runs in the model-training view."""
    return f"{(base or UI_URL).rstrip('/')}/#/experiments/{experiment_id}/runs{_ML_VIEW}"


def run_url(experiment_id: str, run_id: str, base: str = "") -> str:
    return f"{(base or UI_URL).rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}{_ML_VIEW}"


def run_link(run_id: str, label: str = "") -> str:
    """A Markdown link to a run that works inside the MLflow UI (a description, a note)."""
    from mlflow.tracking import MlflowClient

    try:
        exp = MlflowClient().get_run(run_id).info.experiment_id
    except Exception:
        return f"`{label or run_id}`"
    return f"[{label or run_id[:8]}](#/experiments/{exp}/runs/{run_id}{_ML_VIEW})"


def print_ui_urls(base: str = "", uri: str = "") -> None:
    """Print, for each experiment of the tracking store, the UI link to its runs (``make ui``)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        print(f"no tracking store at {uri} yet: run `make demo` first")
        return
    exps = [e for e in MlflowClient(uri).search_experiments() if e.name != "Default"]
    if not exps:
        print(f"no experiments in {uri} yet: run `make demo` first")
    for e in exps:
        print(f"  {e.name}: {runs_url(e.experiment_id, base)}")
