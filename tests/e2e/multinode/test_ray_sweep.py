"""``fsd sweep --executor ray --workers N``: Optuna workers as Ray tasks on one shared study,
for real: a 2-node Ray cluster on loopback, the PostgreSQL + S3 + mlflow server stack of
tests/support/devstack.py (both shared with this folder's other modules: conftest.py), one
featurize, and a driver that starts 2 sweep workers as Ray tasks (one per node) on a study in
PostgreSQL. A local sqlite study is refused on that cluster first. Without PostgreSQL or Ray
this skips, saying what is missing; under FSD_REQUIRE_DISTRIBUTED=1 that is a failure instead.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from stack_pipeline import CONFIG, worker_env
from tiny_schedule import ONE_EPOCH

pytestmark = [pytest.mark.e2e, pytest.mark.distributed, pytest.mark.slow]

# its own experiment and study database: the stack is shared with this folder's other modules
EXPERIMENT = "ray-sweep"
STUDY_DB = "optuna_ray_sweep"
TINY = [*ONE_EPOCH, "store.workers=1", "model.backbone=cnn", "model.cnn_channels=[8,16]",
        "model.cnn_convs=1", "model.dense1=16", "model.dense2=16",
        "sweep.cyclic_epochs=1", "sweep.plateau_low_epochs=0", "sweep.plateau_high_epochs=0",
        "sweep.crop_min_low=30", "sweep.crop_min_high=40", "sweep.crop_max_low=60",
        "sweep.crop_max_high=80", "sweep.pruner=none", "sweep.folds=[0]",
        f"tracking.experiment={EXPERIMENT}"]


def test_sweep_workers_as_ray_tasks_share_a_postgresql_study(stack, ray_cluster, tmp_path):
    from mlflow.tracking import MlflowClient

    logs = tmp_path / "logs"
    logs.mkdir()
    stack.create_database(STUDY_DB)
    cluster = ray_cluster
    with stack.credentials():
        env = worker_env(stack)
        where = [f"store.cache_dir={tmp_path / 'cache'}", f"output_dir={tmp_path / 'out'}"]

        def fsd(name: str, *args: str) -> tuple[int, str]:
            log = logs / f"{name}.log"
            with open(log, "wb") as fh:
                rc = subprocess.run([sys.executable, "-m", "fsd", args[0], "--config", CONFIG,
                                     *args[1:], *TINY, *where], cwd=tmp_path, env=env,
                                    stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, timeout=900).returncode
            return rc, log.read_text(errors="replace")

        rc, out = fsd("featurize", "featurize")
        assert rc == 0, out[-3000:]
        # the default study (a sqlite file on the driver's disk) on two nodes: refused
        rc, out = fsd("sqlite", "sweep", "--executor", "ray", "--workers", "2",
                      "--ray-address", cluster.address, "--n-trials", "2")
        assert rc == 2 and "cannot share" in out, out[-3000:]
        assert "Traceback" not in out
        rc, out = fsd("sweep", "sweep", "--executor", "ray", "--workers", "2",
                      "--ray-address", cluster.address, "--n-trials", "2",
                      # the password travels in the runtime env, never in an argument
                      f"sweep.storage={stack.db_url(STUDY_DB, with_password=True)}")
        assert rc == 0, out[-4000:]

        # two workers, one per node, each ran its trial on the shared study
        nodes = re.findall(r"sweep worker \d on node ([0-9a-f]+): done", out)
        assert len(nodes) == 2, out[-3000:]
        states = dict(stack.sql(STUDY_DB, "SELECT number, state FROM trials ORDER BY number"))
        assert sorted(states) == [0, 1] and set(states.values()) == {"COMPLETE"}, states
        client = MlflowClient(tracking_uri=stack.tracking_uri)
        exp = client.get_experiment_by_name(EXPERIMENT)
        runs = client.search_runs([exp.experiment_id], max_results=100)
        sweeps = [r for r in runs if r.data.tags.get("fsd.stage") == "sweep"]
        trials = [r for r in runs if r.data.tags.get("fsd.stage") == "sweep_trial"]
        assert len(sweeps) == 2 and {r.info.status for r in sweeps} == {"FINISHED"}
        assert {r.data.tags.get("fsd.ray_node") for r in sweeps} == set(nodes)
        assert len(set(nodes)) == 2, "the workers did not spread over both nodes"
        assert len(trials) == 2 and {r.info.status for r in trials} == {"FINISHED"}
        assert {r.data.params.get("sweep.storage") for r in sweeps} == {stack.db_url(STUDY_DB)}
        texts = {p.name: p.read_text(errors="replace") for p in logs.iterdir()}
        texts["mlflow db"] = stack.dump_database("mlflow")
        # nor in any log of the Ray nodes (Ray logs a job's runtime environment, values too)
        ray_logs = Path(cluster.head_node.get_session_dir_path()) / "logs"
        texts |= {f"ray log {p.name}": p.read_text(errors="replace")
                  for p in ray_logs.rglob("*") if p.is_file()}
        for secret in stack.secrets:
            for name, text in texts.items():
                assert secret not in text, f"a credential leaked into {name}"
