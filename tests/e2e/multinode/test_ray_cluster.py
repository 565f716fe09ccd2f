"""`fsd main --executor ray` on a real 2-node Ray cluster, with the team's tracking stack.

A head node and a worker node (`ray.cluster_utils.Cluster`, one CPU each, every address
127.0.0.1) and PostgreSQL + moto S3 + `mlflow server` (tests/support/devstack.py), both shared
with this folder's other modules (conftest.py). The driver is
`fsd main` in its own process; each fold and baseline is a Ray task that runs `fsd train-fold`
/ `fsd baseline` in a process of its own, with node-local outputs and feature cache: the
nodes exchange everything through the tracking server and its artifact store.

1. the demo's folds land on both nodes (two `fsd.ray_node` values), and the folds' and the
   out-of-fold MAP@3 equal the local pipeline's on the same folds and seeds (conftest.py's
   ``local_pipeline``, which test_distributed.py checks too: `fsd main` on the local executor);
2. the worker node is killed mid-fold, after its first checkpoint upload: Ray retries the fold
   on the head node, which resumes it from the artifact store's checkpoint; the dead attempt's
   run ends KILLED; the pipeline finishes and registers a model;
3. tasks that fail for good are each named with their node, after all have ended; a file
   tracking store is refused on two nodes;
4. the credentials reach a task's process through the object store, never the runtime
   environment (which Ray logs), and no Ray log holds one;
5. the driver killed mid-pipeline and started again reuses the finished folds and resumes the
   interrupted ones from their uploaded checkpoints.

Without Ray or the stack it skips; with FSD_REQUIRE_DISTRIBUTED=1 (.ci/run) it fails instead.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from stack_pipeline import CONFIG, PIPELINE, worker_env

pytestmark = [pytest.mark.e2e, pytest.mark.distributed, pytest.mark.slow]


@pytest.fixture(scope="module", autouse=True)
def connected(stack, ray_cluster):
    """This process joined to the cluster (to read its nodes, and for the in-process tests),
    its own MLflow clients reading the server as a worker does."""
    import ray

    ray.init(address=ray_cluster.address)
    try:
        addresses = {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
        assert addresses == {"127.0.0.1"}, f"a Ray node is not on loopback: {addresses}"
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        with stack.credentials():
            yield
    finally:
        ray.shutdown()


class Driver:
    """`fsd main` in its own process."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], where: Path):
        where.mkdir(parents=True, exist_ok=True)
        self.log = where / f"{name}.log"
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fsd", "main", "--config", CONFIG, *PIPELINE,
                 f"output_dir={where / 'out'}", f"store.cache_dir={where / 'cache'}", *args],
                cwd=where, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait(self, timeout: float = 900) -> None:
        rc = self.proc.wait(timeout=timeout)
        assert rc == 0, f"fsd main exited {rc}:\n{self.log.read_text()[-5000:]}"


def _mid_fold(run) -> bool:
    """A fold run training, with a checkpoint uploaded and stage 2's epochs still ahead: killed
    now, it cannot finish first (one near its end, seen RUNNING, sometimes did)."""
    return run.info.status == "RUNNING" and bool(run.data.tags.get("fsd.checkpoint")) and \
        not any(k.startswith("stage2/") for k in run.data.metrics)


def _runs(client, experiment: str) -> dict[str, list]:
    exp = client.get_experiment_by_name(experiment)
    by_stage: dict[str, list] = {}
    for r in client.search_runs([exp.experiment_id], max_results=500):
        by_stage.setdefault(r.data.tags.get("fsd.stage", ""), []).append(r)
    return by_stage


def test_folds_on_both_nodes_match_the_local_executor(stack, ray_cluster, local_pipeline,
                                                       tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=stack.tracking_uri)
    ray_main = Driver("ray", ["--executor", "ray", "--ray-address", ray_cluster.address,
                              "tracking.experiment=on-ray", "ensemble.model_name=fsd-ray"],
                      worker_env(stack), tmp_path / "ray")
    ray_main.wait()

    on_ray = _runs(client, "on-ray")
    (main,) = on_ray["main"]
    folds = {int(r.data.tags["fsd.fold"]): r for r in on_ray["train_fold"]}
    assert sorted(folds) == [0, 1]
    nodes = {r.data.tags.get("fsd.ray_node") for r in folds.values()}
    alive = {n["NodeID"] for n in __import__("ray").nodes() if n["Alive"]}
    assert len(nodes) == 2 and nodes <= alive, (nodes, alive)
    for r in folds.values():
        assert r.info.status == "FINISHED"
        assert r.data.tags["mlflow.parentRunId"] == main.info.run_id
        assert float(r.data.metrics["perf/checkpoint_uploads"]) >= 1
    (baseline,) = on_ray["baseline"]
    assert baseline.info.status == "FINISHED"
    assert baseline.data.tags["mlflow.parentRunId"] == main.info.run_id
    assert client.get_model_version_by_alias("fsd-ray", "champion").run_id == \
        on_ray["ensemble"][0].info.run_id

    # the same folds and seeds in the local pipeline on this machine (conftest.py: the folds
    # in `fsd train-fold` processes, `fsd main` on the local executor): the same figures
    local = client.get_run(local_pipeline.main_run)
    local_folds = {int(r.data.tags["fsd.fold"]): r for r in
                   map(client.get_run, local.data.tags["fsd.fold_runs"].split(","))}
    for k in (0, 1):
        assert folds[k].data.metrics["val_map3"] == local_folds[k].data.metrics["val_map3"], k
    for key in ("oof_map3", "cnn_oof_map3", "best_baseline_oof_map3"):
        assert main.data.metrics[key] == local.data.metrics[key], key

    # no credential in the driver's log, nor in any log of the Ray nodes (Ray logs a job's
    # runtime environment there: the credentials travel through the object store instead)
    texts = {"driver log": ray_main.log.read_text(errors="replace")}
    logs = Path(ray_cluster.head_node.get_session_dir_path()) / "logs"
    texts |= {p.name: p.read_text(errors="replace") for p in logs.rglob("*") if p.is_file()}
    assert any("Creating runtime env" in t for t in texts.values())  # the log checked is there
    for secret in stack.secrets + [stack.aws_key_id]:
        for where, text in texts.items():
            assert secret not in text, f"a credential leaked into {where}"


def test_credentials_reach_tasks_without_the_runtime_environment(monkeypatch):
    import ray

    from fsd.cluster import runtime
    from fsd.config import Config

    monkeypatch.setenv("PGPASSWORD", "pg-secret-for-the-task")
    monkeypatch.setattr(runtime, "_secrets", {})  # put this test's credentials afresh
    runtime.connect(Config())
    secrets = runtime.secrets_ref()

    @ray.remote(num_cpus=1, scheduling_strategy="SPREAD")
    def seen(secrets: list) -> tuple[str, str, str]:
        import os

        env = runtime.task_environment(secrets)
        return ray.get_runtime_context().get_node_id(), env.get("PGPASSWORD", ""), \
            os.environ.get("PGPASSWORD", "")

    results = ray.get([seen.remote(secrets) for _ in range(2)])
    # the process a task starts gets the driver's password; the task's own environment
    # (where Ray's runtime environment lands) never had it
    assert {r[1] for r in results} == {"pg-secret-for-the-task"}
    assert {r[2] for r in results} == {""}


def test_a_node_dies_mid_fold_and_the_fold_resumes_elsewhere(stack, ray_cluster, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=stack.tracking_uri)
    cluster = ray_cluster
    worker_id = cluster.worker.node_id
    # the fold must live long enough to be killed after its first upload: more epochs
    longer = ["train.stage1.cyclic_epochs=3", "train.stage2.cyclic_epochs=3",
              "tracking.experiment=node-kill", "ensemble.model_name=fsd-node-kill",
              "baseline.models=[]", "cluster.max_retries=2",
              # the ensemble scores in the driver: the actors are test 1's and test_ray_scoring's
              "cluster.scoring_actors=0"]
    driver = Driver("kill", ["--executor", "ray", "--ray-address", cluster.address, *longer],
                    worker_env(stack), tmp_path / "kill")
    deadline = time.monotonic() + 600
    victim = None
    while victim is None:
        assert driver.proc.poll() is None, driver.log.read_text()[-4000:]
        assert time.monotonic() < deadline, "no fold on the worker node uploaded a checkpoint"
        exp = client.get_experiment_by_name("node-kill")
        if exp is not None:
            for r in client.search_runs([exp.experiment_id], "tags.`fsd.stage` = 'train_fold'"):
                if r.data.tags.get("fsd.ray_node") == worker_id and _mid_fold(r):
                    victim = r
        time.sleep(0.3)
    cluster.remove_node(cluster.worker, allow_graceful=False)
    try:
        driver.wait()
    finally:
        cluster.worker = cluster.add_node(**cluster.node_args)

    runs = _runs(client, "node-kill")
    fold = victim.data.tags["fsd.fold"]
    attempts = [r for r in runs["train_fold"] if r.data.tags["fsd.fold"] == fold]
    dead = client.get_run(victim.info.run_id)
    assert dead.info.status in ("KILLED", "FAILED"), dead.info.status
    (resumed,) = [r for r in attempts if r.info.status == "FINISHED"]
    assert resumed.data.tags["fsd.ray_node"] != worker_id
    assert resumed.data.tags["fsd.continues"] == victim.info.run_id
    # it started from the uploaded checkpoint, not from epoch 0: the epochs done before it
    # are replayed into it, and it trained the rest
    assert int(resumed.data.tags["fsd.replayed_epochs"]) >= 1
    assert resumed.data.tags["fsd.resumed_checkpoint"].startswith(victim.info.run_id)
    (main,) = runs["main"]
    assert main.info.status == "FINISHED" and "oof_map3" in main.data.metrics
    version = client.get_model_version_by_alias("fsd-node-kill", "champion")
    assert version.run_id == runs["ensemble"][0].info.run_id


def test_a_task_that_fails_for_good_names_its_fold_and_node_and_the_others_finish(
        stack, monkeypatch, tmp_path):
    import ray

    from fsd.cluster.folds import ClusterError, train_on_ray
    from fsd.config import load_config

    cfg = load_config(CONFIG, [*PIPELINE, "cluster.executor=ray"])
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    # a tracking store in a file on this machine: the other node cannot reach it
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(ClusterError, match="run an MLflow tracking server"):
        train_on_ray(cfg, [0], [], "f" * 32, "p" * 32)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.tracking_uri)
    # folds 7 and 8 do not exist in a 2-fold config: each `fsd train-fold` exits 2 at once
    with pytest.raises(ClusterError) as err:
        train_on_ray(cfg, [7, 8], [], "f" * 32, "p" * 32)
    message = str(err.value)
    for fold in (7, 8):  # one failure did not stop the other task
        line = next(p for p in message.split("; ") if p.startswith(f"fold {fold} "))
        assert "exit code 2" in line and any(f"on Ray node {n}" in line for n in nodes), line
    assert "rerun the same command to resume" in message


def test_a_driver_killed_mid_pipeline_resumes_when_started_again(stack, ray_cluster, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=stack.tracking_uri)
    # three folds on two one-CPU nodes: the third starts when the first is done (no baseline
    # task: it would hold a CPU, and what is killed and resumed here are folds)
    args = ["--executor", "ray", "--ray-address", ray_cluster.address, "folds.n_folds=3",
            "train.stage1.cyclic_epochs=3", "train.stage2.cyclic_epochs=3",
            "tracking.experiment=driver-kill", "ensemble.model_name=fsd-driver-kill",
            "baseline.models=[]", "cluster.scoring_actors=0"]
    # the same machine and folders both times (the synthetic clips, and so the features' key,
    # are made in the driver's cache)
    first = Driver("first", args, worker_env(stack), tmp_path / "driver")
    deadline = time.monotonic() + 600
    while True:
        assert first.proc.poll() is None, first.log.read_text()[-4000:]
        assert time.monotonic() < deadline, "no fold finished while another had a checkpoint"
        exp = client.get_experiment_by_name("driver-kill")
        folds = client.search_runs([exp.experiment_id], "tags.`fsd.stage` = 'train_fold'") \
            if exp else []
        done = {r.data.tags["fsd.fold"]: r for r in folds if r.info.status == "FINISHED"}
        going = {r.data.tags["fsd.fold"]: r for r in folds if _mid_fold(r)}
        if done and going:
            break
        time.sleep(0.3)
    first.proc.kill()  # the driver dies: Ray ends its job's tasks, and their processes
    first.proc.wait()

    second = Driver("second", args, worker_env(stack), tmp_path / "driver")
    second.wait()
    runs = _runs(client, "driver-kill")
    mains = sorted(runs["main"], key=lambda r: r.info.start_time)
    assert [r.info.status for r in mains] == ["KILLED", "FINISHED"]
    used = mains[1].data.tags["fsd.fold_runs"].split(",")
    for fold, r in done.items():  # finished folds are reused, not trained again
        assert r.info.run_id in used, fold
        assert sum(x.data.tags["fsd.fold"] == fold for x in runs["train_fold"]) == 1
    for fold, r in going.items():  # interrupted folds resume from their uploaded checkpoint
        assert client.get_run(r.info.run_id).info.status in ("KILLED", "FAILED")
        (resumed,) = [x for x in runs["train_fold"] if x.data.tags["fsd.fold"] == fold
                      and x.info.status == "FINISHED"]
        assert resumed.data.tags["fsd.continues"] == r.info.run_id
        assert int(resumed.data.tags["fsd.replayed_epochs"]) >= 1
    assert client.get_model_version_by_alias("fsd-driver-kill", "champion").run_id == \
        runs["ensemble"][0].info.run_id
