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
    monkeypatch.setattr(runtime, "_secrets", [])
    with pytest.raises(RuntimeError, match="connect"):
        runtime.secrets_ref()
