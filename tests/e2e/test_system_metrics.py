"""A tracked run samples its system metrics (CPU, memory) at the interval its length asks
for, often enough to draw a curve: a real MLflow run with MLflow's sampling thread, seconds of
wall time (the interval's rule is a unit test: tests/unit/tracking/test_figures.py)."""

from __future__ import annotations

import time

import mlflow
import pytest

from fsd.tracking.runs import sample_system_metrics

pytestmark = pytest.mark.e2e


def test_a_training_run_samples_its_system_metrics_at_that_interval(tmp_path, monkeypatch):
    pytest.importorskip("psutil")
    monkeypatch.delenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", raising=False)
    assert sample_system_metrics(14 * 16) == 1.0
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/m.db")
    exp = mlflow.create_experiment("s", artifact_location=str(tmp_path / "a"))
    with mlflow.start_run(experiment_id=exp, log_system_metrics=True) as run:
        time.sleep(4.5)
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id,
                                                       "system/cpu_utilization_percentage")
    assert len(history) >= 3  # MLflow's default (10 s) would give one
    # a value the user exported wins
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "7")
    assert sample_system_metrics(14 * 16) == 7.0
