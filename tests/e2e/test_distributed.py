"""The team setup for real: PostgreSQL + an S3 server + `mlflow server`, and many workers.

Starts the local stand-in of `tests/devstack.py` (Debian PostgreSQL, moto's S3 server, a real
`mlflow server` with a PostgreSQL backend store and proxied S3 artifacts) on 127.0.0.1, then,
each in its own process as on separate machines: featurize once; folds 0 and 1 at the same
time, each fetching the features through the artifact store into its own cache; the ensemble
(registered, @champion); a sweep whose first worker is killed mid-trial and two more workers
that share the Optuna study in PostgreSQL. Checks runs, per-epoch metrics, trials, the
registered model, the bucket's objects, and that no credential reached the tracking data, the
study, the bucket or the logs.

Without PostgreSQL or the Python packages (a laptop) it skips, saying what is missing;
with FSD_REQUIRE_DISTRIBUTED=1 (.ci/run sets it) that is a failure instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import devstack
import pytest
from tiny_schedule import ONE_EPOCH

pytestmark = [pytest.mark.e2e, pytest.mark.distributed, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "experiments" / "demo.yaml")
TINY = [*ONE_EPOCH, "folds.n_folds=2",
        "store.workers=1", "model.backbone=cnn", "model.cnn_channels=[8,16]", "model.cnn_convs=1",
        "model.dense1=16", "model.dense2=16",
        "ensemble.tta_n_lengths=1", "ensemble.tta_crops=2", "ensemble.blend=false",
        "ensemble.model_name=fsd-distributed-test",
        "sweep.cyclic_epochs=1", "sweep.plateau_low_epochs=0", "sweep.plateau_high_epochs=0",
        "sweep.crop_min_low=30", "sweep.crop_min_high=40", "sweep.crop_max_low=60",
        "sweep.crop_max_high=80", "sweep.pruner=none"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    devstack.require_stack()
    with devstack.Stack(tmp_path_factory.mktemp("stack")) as s:
        yield s


class Worker:
    """`python -m fsd ...` in its own process (session), as on another machine."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path):
        self.name = name
        self.log = logs / f"{name}.log"
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen([sys.executable, "-m", "fsd", *args], cwd=logs, env=env,
                                         stdout=fh, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    def wait(self, timeout: float = 600) -> None:
        rc = self.proc.wait(timeout=timeout)
        assert rc == 0, f"{self.name} exited {rc}:\n{self.log.read_text()[-4000:]}"

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


def test_pipeline_and_sweep_on_a_shared_tracking_server(stack, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    # this process reads the results back as a worker would: with the worker's credentials
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(key, stack.worker_env[key])

    logs = tmp_path / "logs"
    logs.mkdir()
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("MLFLOW_", "AWS_", "PG")) and k != "FSD_PROGRESS"}
    env = {**base, **stack.worker_env, "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK": "true",
           "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO),
           # a worker may well hold S3 keys too; they must not leak either
           "AWS_ACCESS_KEY_ID": stack.aws_key_id, "AWS_SECRET_ACCESS_KEY": stack.aws_secret,
           "FSD_SWEEP_HEARTBEAT_S": "1", "FSD_SWEEP_GRACE_S": "8"}

    def machine(name: str) -> list[str]:
        return [f"store.cache_dir={tmp_path / name / 'cache'}",
                f"output_dir={tmp_path / name / 'out'}"]

    def fsd(name: str, *args: str, where: str | None = None, extra_env=None) -> Worker:
        return Worker(name, [args[0], "--config", CONFIG, *args[1:], *TINY,
                             *machine(where or name)], {**env, **(extra_env or {})}, logs)

    # 1. featurize once, then hide its store: the workers are other machines
    fsd("featurize", "featurize").wait()
    client = MlflowClient(tracking_uri=stack.tracking_uri)
    exp = client.get_experiment_by_name("demo")
    feat = client.search_runs([exp.experiment_id], "tags.`fsd.stage` = 'featurize'")[0]
    local_store = Path(feat.data.tags["fsd.store_dir"])
    local_store.rename(tmp_path / "hidden-store")

    # 2. two folds at once, on two "machines", each downloading the features
    folds = [fsd(f"fold{k}", "train-fold", "--fold", str(k)) for k in (0, 1)]
    for w in folds:
        w.wait()
    for k in (0, 1):
        fetched = list((tmp_path / f"fold{k}" / "cache" / "features").glob("*/train/logmel.npy"))
        assert len(fetched) == 1, f"fold {k} did not fetch the features into its own cache"

    # 3. the ensemble gathers the folds from the server and registers the model
    fsd("ensemble", "ensemble").wait()

    # 4. a sweep: the first worker is killed mid-trial, two more share the study
    first = fsd("sweep-a", "sweep", "--n-trials", "1",
                f"sweep.storage={stack.db_url('optuna')}")
    deadline = time.monotonic() + 300
    while not _trials(stack, "RUNNING"):
        assert first.proc.poll() is None, first.log.read_text()[-3000:]
        assert time.monotonic() < deadline, "no sweep trial started"
        time.sleep(0.5)
    first.kill()
    time.sleep(9)  # past the grace period: the trial's heartbeat has gone stale
    others = [fsd("sweep-b", "sweep", "--n-trials", "1",
                  # a password in the URL must be redacted everywhere
                  f"sweep.storage={stack.db_url('optuna', with_password=True)}"),
              fsd("sweep-c", "sweep", "--n-trials", "1", f"sweep.storage={stack.db_url('optuna')}")]
    for w in others:
        w.wait()

    # --- what the server holds -----------------------------------------------------------
    runs = client.search_runs([exp.experiment_id], max_results=500)
    by_stage: dict[str, list] = {}
    for r in runs:
        by_stage.setdefault(r.data.tags.get("fsd.stage", ""), []).append(r)
    fold_runs = {int(r.data.tags["fsd.fold"]): r for r in by_stage["train_fold"]}
    assert sorted(fold_runs) == [0, 1]
    assert len({r.data.tags["fsd.pid"] for r in fold_runs.values()}) == 2
    for r in fold_runs.values():
        assert r.info.status == "FINISHED"
        assert r.data.tags["fsd.features_run"] == feat.info.run_id
        assert len(client.get_metric_history(r.info.run_id, "stage1/loss")) >= 1
        assert client.get_metric_history(r.info.run_id, "stage2/val_map3")
        assert "val_map3" in r.data.metrics
    (ens,) = by_stage["ensemble"]
    assert ens.info.status == "FINISHED" and "oof_map3" in ens.data.metrics
    version = client.get_model_version_by_alias("fsd-distributed-test", "champion")
    assert version.run_id == ens.info.run_id
    assert [m.name for m in client.search_registered_models()] == ["fsd-distributed-test"]

    # the study: the killed worker's trial marked FAIL and retried, never lost
    states = dict(stack.sql("optuna", "SELECT number, state FROM trials ORDER BY number"))
    assert sorted(states.values()).count("COMPLETE") == 2, states
    failed = [n for n, s in states.items() if s == "FAIL"]
    assert len(failed) == 1, states
    retried = stack.sql("optuna", "SELECT t.number FROM trial_system_attributes a JOIN trials t "
                                  "ON a.trial_id = t.trial_id WHERE a.key = 'failed_trial'")
    assert len(retried) == 1 and states[retried[0][0]] == "COMPLETE"
    sweeps = by_stage["sweep"]
    assert len(sweeps) == 3  # one per worker; the killed one's marked KILLED
    assert {r.info.status for r in sweeps} == {"FINISHED", "KILLED"}
    trial_runs = by_stage["sweep_trial"]
    assert sum(r.info.status == "FINISHED" for r in trial_runs) == 2

    # the artifacts are objects in the bucket, written through the server
    objects = stack.bucket_objects()
    keys = list(objects)
    feat_prefix = f"mlartifacts/{exp.experiment_id}/{feat.info.run_id}/artifacts/features/"
    assert any(k.startswith(feat_prefix) and k.endswith("train/logmel.npy") for k in keys)
    for r in fold_runs.values():
        assert any(k.startswith(f"mlartifacts/{exp.experiment_id}/{r.info.run_id}/") and
                   k.endswith(".keras") for k in keys), r.info.run_id
    assert any(k.endswith("MLmodel") for k in keys)

    # no credential anywhere: tracking rows, study rows, bucket objects, worker logs
    texts = {"mlflow db": stack.dump_database("mlflow"), "optuna db": stack.dump_database("optuna")}
    texts.update({f"worker log {p.name}": p.read_text(errors="replace") for p in logs.iterdir()})
    for secret in stack.secrets + [stack.aws_key_id]:
        for where, text in texts.items():
            assert secret not in text, f"a credential leaked into the {where}"
        for key, data in objects.items():
            assert secret.encode() not in data, f"a credential leaked into s3://{key}"
    storage_params = {r.data.params.get("sweep.storage") for r in sweeps}
    assert storage_params == {stack.db_url("optuna")}, storage_params


def _trials(stack, state: str) -> list:
    try:
        return stack.sql("optuna", "SELECT number FROM trials WHERE state = %s", (state,))
    except Exception:  # noqa: BLE001 - the study's tables are not created yet
        return []


def test_the_tracking_server_refuses_requests_without_credentials(stack):
    """Issue 25: the stack runs MLflow's basic-auth app; workers authenticate through
    MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, and a request without them (or with
    a wrong password) is refused."""
    env = stack.worker_env
    path = "/api/2.0/mlflow/experiments/search?max_results=1"
    assert stack.request(path)[0] == 401
    assert stack.request(path, user=env["MLFLOW_TRACKING_USERNAME"], password="wrong")[0] == 401
    status, body = stack.request(path, user=env["MLFLOW_TRACKING_USERNAME"],
                                 password=env["MLFLOW_TRACKING_PASSWORD"])
    assert status == 200, body[:300]
    # a worker creates what it logs, through MLflow's client and the same two variables
    code = ("import mlflow; e = mlflow.create_experiment('auth-check'); "
            "print(mlflow.get_experiment(e).name)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env})
    assert done.returncode == 0 and done.stdout.strip() == "auth-check", done.stderr[-2000:]
    anonymous = {k: v for k, v in env.items() if not k.startswith("MLFLOW_TRACKING_USER")
                 and k != "MLFLOW_TRACKING_PASSWORD"}
    done = subprocess.run([sys.executable, "-c", code.replace("auth-check", "anon")],
                          capture_output=True, text=True, timeout=120,
                          env={**{k: v for k, v in os.environ.items()
                                  if not k.startswith("MLFLOW_TRACKING_")}, **anonymous})
    assert done.returncode != 0 and "401" in done.stderr + done.stdout, done.stderr[-2000:]
    assert devstack.WORKER_USER == env["MLFLOW_TRACKING_USERNAME"]
