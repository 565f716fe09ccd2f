"""What the multi-node modules share, started once for this folder and stopped after its last
test (package scope: the folder is a package so that it ends there, not at the session's end):

- ``stack``: PostgreSQL + moto S3 + ``mlflow server`` behind basic auth (tests/support/devstack.py);
  each module keeps its runs in experiments, models and Optuna databases of its own;
- ``local_pipeline``: the local pipeline of tests/support/stack_pipeline.py on that stack, read
  by test_distributed.py (its runs, its workers' logs) and test_ray_cluster.py (the local
  figures the Ray executor must equal);
- ``ray_cluster``: a head and a worker node on 127.0.0.1, one CPU each (tests/support/raycluster.py).

Without PostgreSQL or Ray a test skips, saying what is missing; under FSD_REQUIRE_DISTRIBUTED=1
(.ci/run) it fails instead.
"""

from __future__ import annotations

import devstack
import pytest
import raycluster
from stack_pipeline import MODEL_NAME, PIPELINE, run_local_pipeline


@pytest.fixture(scope="package")
def stack(tmp_path_factory):
    devstack.require_stack()
    with devstack.Stack(tmp_path_factory.mktemp("stack")) as s:
        yield s


@pytest.fixture(scope="package")
def local_pipeline(stack, tmp_path_factory):
    return run_local_pipeline(stack, tmp_path_factory.mktemp("pipeline"),
                              [*PIPELINE, f"ensemble.model_name={MODEL_NAME}"])


@pytest.fixture(scope="package")
def ray_cluster():
    with raycluster.local_cluster(nodes=2, cpus_per_node=1) as cluster:
        yield cluster
