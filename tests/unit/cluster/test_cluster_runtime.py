"""What a Ray task is given of the driver's environment (no Ray needed)."""

import os

import pytest

from fsd.cluster import runtime


def test_settings_travel_in_the_runtime_env_and_credentials_do_not(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://alice:s3cret@tracking.internal:5000")
    monkeypatch.setenv("PGPASSWORD", "pg-pass")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://s3.internal:9000")
    env = runtime.task_env()
    assert env["MLFLOW_TRACKING_URI"] == "http://tracking.internal:5000"
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://s3.internal:9000"
    text = repr(env)
    for secret in ("s3cret", "pg-pass", "aws-secret", "alice"):
        assert secret not in text
    secrets = runtime.driver_secrets()
    assert secrets["MLFLOW_TRACKING_USERNAME"] == "alice"
    assert secrets["MLFLOW_TRACKING_PASSWORD"] == "s3cret"
    assert secrets["PGPASSWORD"] == "pg-pass" and secrets["AWS_SECRET_ACCESS_KEY"] == "aws-secret"


@pytest.mark.parametrize("uri, absolute, local", [
    ("sqlite:///mlflow.db", "sqlite:///" + os.path.abspath("mlflow.db"), True),
    ("sqlite:////srv/mlflow.db", "sqlite:////srv/mlflow.db", True),
    ("file:./mlruns", "file://" + os.path.abspath("mlruns"), True),
    ("mlruns", os.path.abspath("mlruns"), True),
    ("http://tracking.internal:5000", "http://tracking.internal:5000", False),
    ("databricks", "databricks", False),
])
def test_a_local_store_is_made_absolute_for_tasks(uri, absolute, local):
    # a task runs in a folder of its own: a relative sqlite path would open another database
    assert runtime.absolute_uri(uri) == absolute
    assert runtime.local_store(uri) is local


def test_secrets_ref_needs_a_connection(monkeypatch):
    monkeypatch.setattr(runtime, "_secrets", {})
    with pytest.raises(RuntimeError, match="connect"):
        runtime.secrets_ref()


def test_an_address_that_does_not_answer_is_one_line_at_once():
    import socket
    import time

    with socket.socket() as s:  # a port nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(runtime.RayUnavailable, match=f"127.0.0.1:{port}"):
            runtime.check_reachable(f"127.0.0.1:{port}", timeout=2)
        with pytest.raises(runtime.RayUnavailable):
            runtime.check_reachable(f"ray://127.0.0.1:{port}", timeout=2)
        assert time.monotonic() - start < 30
    runtime.check_reachable(None)
    runtime.check_reachable("auto")  # Ray's own forms are left to Ray


def test_a_task_config_drops_the_sweep_password():
    from fsd.cluster.folds import task_config
    from fsd.config import load_config

    cfg = load_config(None, ["sweep.storage=postgresql+psycopg2://optuna:hunter2secret@db:5432/optuna"])
    text = task_config(cfg)
    assert "hunter2secret" not in text and "optuna@db:5432/optuna" in text
    assert cfg.sweep.storage.endswith(":hunter2secret@db:5432/optuna")  # the caller's is kept


@pytest.mark.parametrize("resources, overrides, expected", [
    ({"CPU": 4.0}, [], 2),  # as many as asked where they fit
    ({"CPU": 1.0}, [], 1),  # a node died: the one left holds one actor, not two that wait
    ({"CPU": 0.0}, [], 1),  # at least one (Ray says what it waits for)
    ({"CPU": 8.0, "GPU": 1.0}, ["cluster.gpus_per_fold=1"], 1),
    ({"CPU": 8.0}, ["cluster.scoring_actors=3", "cluster.cpus_per_fold=2"], 3),
])
def test_scoring_actors_fit_the_live_cluster(resources, overrides, expected):
    from fsd.cluster.scoring import actor_count
    from fsd.config import load_config

    assert actor_count(resources, load_config(None, overrides)) == expected
