"""The local pipeline the multi-node tests share (tests/e2e/multinode/), on the tracking stack
of devstack.py, each step a ``python -m fsd`` process of its own, as on separate machines:

1. ``fsd featurize`` once, then its store hidden (the other "machines" share no disk);
2. ``fsd train-fold`` for folds 0 and 1 at the same time, on two machines, each fetching the
   features through the artifact store into its own cache;
3. ``fsd main`` on the local executor, back on the first machine (its store gone): it reuses
   the featurize run (fetching its features) and the two folds (the same training key: what
   the local executor's fold workers run is this same ``fsd train-fold``), fits the logreg
   baseline and runs the ensemble (registered, @champion).

test_distributed.py checks what these left on the server (and sweeps on top);
test_ray_cluster.py checks that ``fsd main --executor ray`` with the same :data:`PIPELINE`
settings gives the same figures. Built once, read by both: one local pipeline instead of two.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tiny_schedule import ONE_EPOCH

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "experiments" / "demo.yaml")
# The demo at its smallest: what the local pipeline and the Ray executor's run both train
PIPELINE = [*ONE_EPOCH, "folds.n_folds=2", "store.workers=1", "model.backbone=cnn",
            "model.cnn_channels=[8,16]", "model.cnn_convs=1", "model.dense1=16",
            "model.dense2=16", "ensemble.tta_n_lengths=1", "ensemble.tta_crops=2",
            "ensemble.blend=false", "baseline.models=[logreg]", "cluster.cpus_per_fold=1"]
EXPERIMENT = "demo"
MODEL_NAME = "fsd-distributed-test"


def worker_env(stack) -> dict[str, str]:
    """A worker's environment: this one without MLflow, AWS, PostgreSQL or Ray settings, plus
    the stack's (a worker may well hold the S3 keys too: they must not leak either)."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("MLFLOW_", "AWS_", "PG", "RAY_ADDRESS")) and k != "FSD_PROGRESS"}
    return {**base, **stack.worker_env, "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK": "true",
            "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO),
            "AWS_ACCESS_KEY_ID": stack.aws_key_id, "AWS_SECRET_ACCESS_KEY": stack.aws_secret}


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


@dataclass
class LocalPipeline:
    """Where the pipeline's machines live (``root/<machine>/``), their logs (``logs/``), and
    the runs it made on the stack."""

    root: Path
    env: dict[str, str]
    settings: list[str]
    logs: Path = field(init=False)
    features_run: str = ""
    main_run: str = ""

    def __post_init__(self) -> None:
        self.logs = self.root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def machine(self, name: str) -> list[str]:
        """The settings that give machine ``name`` its own disk (cache and outputs)."""
        return [f"store.cache_dir={self.root / name / 'cache'}",
                f"output_dir={self.root / name / 'out'}"]

    def fsd(self, name: str, *args: str, where: str | None = None,
            extra_env: dict[str, str] | None = None) -> Worker:
        """``fsd ARGS[0] --config demo.yaml ARGS[1:] <settings>`` started on machine ``where``
        (default ``name``), logging to ``logs/<name>.log``."""
        return Worker(name, [args[0], "--config", CONFIG, *args[1:], *self.settings,
                             *self.machine(where or name)], {**self.env, **(extra_env or {})},
                      self.logs)


def run_local_pipeline(stack, root: Path, settings: list[str]) -> LocalPipeline:
    """Steps 1-3 of the module's docstring on ``stack``; returns where they ran and their runs."""
    from mlflow.tracking import MlflowClient

    pipeline = LocalPipeline(root, worker_env(stack), settings)
    pipeline.fsd("featurize", "featurize").wait()
    with stack.credentials():
        client = MlflowClient(tracking_uri=stack.tracking_uri)
        exp = client.get_experiment_by_name(EXPERIMENT)
        (feat,) = client.search_runs([exp.experiment_id], "tags.`fsd.stage` = 'featurize'")
        pipeline.features_run = feat.info.run_id
        # the workers are other machines: they cannot read this one's store
        Path(feat.data.tags["fsd.store_dir"]).rename(root / "hidden-store")
        folds = [pipeline.fsd(f"fold{k}", "train-fold", "--fold", str(k)) for k in (0, 1)]
        for w in folds:
            w.wait()
        # on the featurize machine: the synthetic clips are made in a machine's own cache, and
        # with them the features' key (elsewhere main would featurize, and train, anew)
        pipeline.fsd("main", "main", where="featurize").wait()
        (main,) = client.search_runs([exp.experiment_id], "tags.`fsd.stage` = 'main'")
        pipeline.main_run = main.info.run_id
    return pipeline
