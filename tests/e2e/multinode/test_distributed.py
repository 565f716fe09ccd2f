"""The team setup for real: PostgreSQL + an S3 server + `mlflow server`, and many workers.

On the stand-in stack of tests/support/devstack.py (Debian PostgreSQL, moto's S3 server, a
real `mlflow server` with a PostgreSQL backend store and proxied S3 artifacts, on 127.0.0.1),
shared by this folder's modules (conftest.py), each step in its own process as on separate
machines: the local pipeline of tests/support/stack_pipeline.py (featurize once; folds 0 and 1
at the same time, each fetching the features through the artifact store into its own cache;
`fsd main` reusing them, fitting a baseline and registering the ensemble @champion); then a
sweep whose first worker is killed mid-trial and two more workers that share the Optuna study
in PostgreSQL. Checks runs, per-epoch metrics, trials, the registered model, the bucket's
objects, and that no credential reached the tracking data, the study, the bucket or the logs.

Without PostgreSQL or the Python packages (a laptop) it skips, saying what is missing;
with FSD_REQUIRE_DISTRIBUTED=1 (.ci/run sets it) that is a failure instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import devstack
import pytest
from stack_pipeline import EXPERIMENT, MODEL_NAME

pytestmark = [pytest.mark.e2e, pytest.mark.distributed, pytest.mark.slow]

SWEEP = ["sweep.cyclic_epochs=1", "sweep.plateau_low_epochs=0", "sweep.plateau_high_epochs=0",
         "sweep.crop_min_low=30", "sweep.crop_min_high=40", "sweep.crop_max_low=60",
         "sweep.crop_max_high=80", "sweep.pruner=none"]
# a trial's heartbeat every second, stale after 8 s: the killed worker's trial is failed soon
SWEEP_ENV = {"FSD_SWEEP_HEARTBEAT_S": "1", "FSD_SWEEP_GRACE_S": "8"}


def test_pipeline_and_sweep_on_a_shared_tracking_server(stack, local_pipeline, monkeypatch):
    from mlflow.tracking import MlflowClient

    # this process reads the results back as a worker would: with the worker's credentials
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(key, stack.worker_env[key])
    pipeline = local_pipeline
    client = MlflowClient(tracking_uri=stack.tracking_uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    feat = client.get_run(pipeline.features_run)

    # 1-3 (tests/support/stack_pipeline.py): featurize, its store hidden; two folds at once on
    # two "machines", each downloading the features; `fsd main` reusing both
    for k in (0, 1):
        fetched = list((pipeline.root / f"fold{k}" / "cache" / "features").glob(
            "*/train/logmel.npy"))
        assert len(fetched) == 1, f"fold {k} did not fetch the features into its own cache"

    # 4. a sweep: the first worker is killed mid-trial, two more share the study
    def sweep(name: str, storage: str):
        return pipeline.fsd(name, "sweep", "--n-trials", "1", *SWEEP, f"sweep.storage={storage}",
                            extra_env=SWEEP_ENV)

    first = sweep("sweep-a", stack.db_url("optuna"))
    deadline = time.monotonic() + 300
    while not _trials(stack, "RUNNING"):
        assert first.proc.poll() is None, first.log.read_text()[-3000:]
        assert time.monotonic() < deadline, "no sweep trial started"
        time.sleep(0.5)
    first.kill()
    time.sleep(9)  # past the grace period: the trial's heartbeat has gone stale
    # a password in the URL must be redacted everywhere
    others = [sweep("sweep-b", stack.db_url("optuna", with_password=True)),
              sweep("sweep-c", stack.db_url("optuna"))]
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
    # `fsd main` reused the featurize run and both folds (same keys), trained nothing again
    (main,) = by_stage["main"]
    assert main.info.run_id == pipeline.main_run and main.info.status == "FINISHED"
    assert len(by_stage["featurize"]) == 1
    assert main.data.tags["fsd.features_run"] == feat.info.run_id
    assert main.data.tags["fsd.fold_runs"] == ",".join(fold_runs[k].info.run_id for k in (0, 1))
    (baseline,) = by_stage["baseline"]
    assert baseline.info.status == "FINISHED"
    assert baseline.data.tags["mlflow.parentRunId"] == main.info.run_id
    assert main.data.metrics["best_baseline_oof_map3"] == baseline.data.metrics["oof_map3"]
    (ens,) = by_stage["ensemble"]
    assert ens.info.status == "FINISHED" and "oof_map3" in ens.data.metrics
    assert ens.data.tags["mlflow.parentRunId"] == main.info.run_id
    assert main.data.metrics["oof_map3"] == ens.data.metrics["oof_map3"]
    version = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert version.run_id == ens.info.run_id
    # the only model registered from this experiment's runs (sweeps register none); the other
    # modules on this server register their own
    ours = {r.info.run_id for r in runs}
    registered = {v.name for m in client.search_registered_models()
                  for v in client.search_model_versions(f"name='{m.name}'") if v.run_id in ours}
    assert registered == {MODEL_NAME}

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
    texts.update({f"worker log {p.name}": p.read_text(errors="replace")
                  for p in pipeline.logs.iterdir()})
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
