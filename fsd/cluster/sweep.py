"""``fsd sweep --executor ray --workers N``: N Optuna workers started as Ray tasks.

Optuna's own distributed mode does the sweeping: every worker loads the same study from the
shared database (``sweep.storage``) and asks it for trials; Ray only starts the workers, where
there is room (each asks for ``cluster.cpus_per_fold`` CPUs and ``cluster.gpus_per_fold``
GPUs, as a fold does), spread over the nodes. Each task runs the very ``fsd sweep`` a person
types on a machine by hand, in a subprocess that exits when its trials are done (so its
memory and GPU are returned): the resolved config travels as text in the task's arguments
(without any password) and is written to a node-local temporary file; the tracking URI and
the credentials travel in the job's runtime environment (:func:`fsd.cluster.runtime.connect`).

The ``--n-trials`` asked for are shared out among the workers (a worker with none is not
started); with only ``--timeout`` each worker runs until it. A local sqlite study cannot be
shared by workers on other machines: with more than one node it is refused.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fsd.config import Config, ConfigError, dump_config

log = logging.getLogger(__name__)

# A sweep worker started by Ray learns the node it runs on from this variable (its run's tag).
RAY_NODE_ENV = "FSD_RAY_NODE_ID"
# Where a password given in sweep.storage's URL travels instead (the runtime environment):
# the variable each database driver reads it from.
PASSWORD_ENV = {"postgresql": "PGPASSWORD", "mysql": "MYSQL_PWD"}


@dataclass
class WorkerResult:
    """How one worker task ended: its exit status and the Ray node it ran on."""

    worker: int
    node: str
    returncode: int
    trials: int


def share_trials(n_trials: int, workers: int) -> list[int]:
    """``n_trials`` shared out among ``workers`` (earlier workers get the remainder); 0 trials
    (a timeout only): every worker gets 0, i.e. runs until the timeout."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if not n_trials:
        return [0] * workers
    base, extra = divmod(n_trials, workers)
    return [base + (i < extra) for i in range(workers) if base + (i < extra) > 0]


def worker_command(config_path: Path, n_trials: int, features_run: str) -> list[str]:
    """The ``fsd sweep`` one worker runs (the local executor: it runs the trials itself;
    ``sweep.timeout`` is in the config)."""
    cmd = [sys.executable, "-m", "fsd", "sweep", "--config", str(config_path),
           "--executor", "local"]
    if n_trials:
        cmd += ["--n-trials", str(n_trials)]
    if features_run:
        cmd += ["--features-run", features_run]
    return cmd


def run_worker(worker: int, config_text: str, n_trials: int, features_run: str) -> WorkerResult:
    """The body of a worker task: write the config to a node-local temporary file, run
    :func:`worker_command` in a subprocess (its output goes to the task's log, which Ray
    shows on the driver), return its exit status."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    env = {**os.environ, RAY_NODE_ENV: node}
    env.pop("MLFLOW_RUN_ID", None)  # each worker opens its own sweep run
    with tempfile.TemporaryDirectory(prefix="fsd-sweep-") as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(config_text)
        proc = subprocess.run(worker_command(path, n_trials, features_run), env=env,
                              stdin=subprocess.DEVNULL, check=False)
    return WorkerResult(worker=worker, node=node, returncode=proc.returncode, trials=n_trials)


def check_storage(url: str, nodes: int) -> None:
    """A sqlite study lives on one machine's disk: workers on other nodes cannot share it."""
    from fsd.sweep import study

    if study.is_sqlite(url) and nodes > 1:
        raise ConfigError(
            f"sweep.storage is a local sqlite file ({study.redact(url)}), which workers on the "
            f"other nodes of this {nodes}-node Ray cluster cannot share: give a database every "
            "node reaches, e.g. sweep.storage=postgresql+psycopg2://USER@HOST:5432/optuna "
            "(password in PGPASSWORD)")


def password_env(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without its password, and the environment variable that carries it instead
    (empty when the URL has none)."""
    import sqlalchemy

    from fsd.sweep import study

    bare = study.redact(url)
    if bare == url:
        return url, {}
    parsed = sqlalchemy.engine.make_url(url)
    name = PASSWORD_ENV.get(parsed.get_backend_name())
    if name is None:
        raise ConfigError(f"sweep.storage carries a password, and a {parsed.get_backend_name()} "
                          "driver reads none from the environment: give it another way "
                          "(e.g. the driver's own config file on each node)")
    return bare, {name: str(parsed.password)}


def run_workers(cfg: Config, workers: int, features_run: str = "") -> int:
    """Start the workers on the cluster (``cluster.address``), wait for them all, log how each
    ended; 0 when every worker exited 0."""
    from fsd.cluster.runtime import connect
    from fsd.sweep import study

    shares = share_trials(cfg.sweep.n_trials, workers)
    url, secret_env = password_env(study.storage_url(cfg))
    ray = connect(cfg)
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    check_storage(url, nodes)
    # the study exists before the workers race to create it; each then loads it
    study.open_study(cfg, study.make_storage(study.storage_url(cfg)))
    shown = study.apply_params(cfg, {"sweep.storage": url, "cluster.executor": "local"})
    text = dump_config(shown)
    c = cfg.cluster
    options = dict(num_cpus=c.cpus_per_fold, num_gpus=c.gpus_per_fold,
                   scheduling_strategy="SPREAD", max_retries=c.max_retries)
    if secret_env:  # beside the job's variables, never in the task's arguments
        options["runtime_env"] = {"env_vars": secret_env}
    task = ray.remote(run_worker).options(**options)
    log.info("sweep: %d workers on a %d-node Ray cluster sharing study %r in %s (trials each: "
             "%s)", len(shares), nodes, study.study_name(cfg), url,
             ", ".join(str(s) if s else "until the timeout" for s in shares))
    refs = [task.remote(i, text, share, features_run) for i, share in enumerate(shares)]
    failed = 0
    for i, ref in enumerate(refs):
        try:
            r: WorkerResult = ray.get(ref)
        except ray.exceptions.RayError as exc:  # its node died more often than retried
            failed += 1
            log.error("sweep worker %d failed for good: %s", i, str(exc).splitlines()[0][:300])
            continue
        if r.returncode != 0:
            failed += 1
            log.error("sweep worker %d on node %s exited %d (its trials' runs say why)",
                      r.worker, r.node, r.returncode)
        else:
            log.info("sweep worker %d on node %s: done (%s)", r.worker, r.node,
                     f"{r.trials} trials" if r.trials else "until the timeout")
    return 1 if failed else 0
