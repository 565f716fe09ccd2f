"""A fold on "another machine": features fetched from a real MLflow tracking server's artifacts."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from fsd import tracking
from fsd.config import from_dict
from fsd.entrypoints.featurize import featurize_logged, resolve_store

pytestmark = pytest.mark.e2e

OVERRIDES = ["data.synthetic_clips_per_class=2", "pca.n_components=4", "folds.n_folds=2",
             "store.workers=1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tracking_server(tmp_path, monkeypatch):
    """`mlflow server` on loopback, serving artifacts itself (as with an S3 bucket behind it)."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("mlflow server did not come up")
                time.sleep(0.5)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow
def test_features_are_fetched_through_the_tracking_server(tmp_path, tracking_server):
    here = from_dict({"name": "remote"}, OVERRIDES + [f"store.cache_dir={tmp_path}/machine_a"])
    with tracking.stage_run(here, "featurize") as run:
        featurize_logged(here)

    there = from_dict({"name": "remote"}, OVERRIDES + [f"store.cache_dir={tmp_path}/machine_b"])
    # Machine B cannot see machine A's disk: hide A's store, as on another host.
    local_a = Path(run.data.tags.get("fsd.store_dir") or
                   MlflowClient().get_run(run.info.run_id).data.tags["fsd.store_dir"])
    local_a.rename(tmp_path / "hidden")
    store, features_run = resolve_store(there)
    assert features_run == run.info.run_id
    assert str(tmp_path / "machine_b") in str(store.path)
    original_path = tmp_path / "hidden"
    from fsd.features.store import FeatureStore

    original = FeatureStore.open(original_path)
    assert list(store.index["fname"]) == list(original.index["fname"])
    np.testing.assert_array_equal(store.summary, original.summary)
    np.testing.assert_array_equal(store.logmel(0), original.logmel(0))
    # a second resolve uses the local cache, no second download
    again, _ = resolve_store(there)
    assert again.path == store.path


@pytest.mark.slow
def test_a_reused_store_is_not_uploaded_twice(tmp_path, tracking_server):
    cfg = from_dict({"name": "remote"}, OVERRIDES + [f"store.cache_dir={tmp_path}/machine_a"])
    with tracking.stage_run(cfg, "featurize") as first:
        featurize_logged(cfg)
    with tracking.stage_run(cfg, "featurize") as second:
        result = featurize_logged(cfg)
    assert result.reused
    client = MlflowClient()
    assert client.get_run(second.info.run_id).data.tags["fsd.store_run"] == first.info.run_id
    assert "features" not in {a.path for a in client.list_artifacts(second.info.run_id)}
    # a fold elsewhere still finds the features, through the run that holds them
    shutil.rmtree(result.store_dir)
    there = from_dict({"name": "remote"}, OVERRIDES + [f"store.cache_dir={tmp_path}/machine_b"])
    store, features_run = resolve_store(there)
    assert features_run == second.info.run_id and len(store.index) > 0
