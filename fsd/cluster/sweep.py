"""``fsd sweep --executor ray --workers N``: N Optuna workers started as Ray tasks.

Optuna's own distributed mode does the sweeping: every worker loads the same study from the
shared database (``sweep.storage``) and asks it for trials; Ray only starts the workers, where
there is room (each asks for ``cluster.cpus_per_fold`` CPUs and ``cluster.gpus_per_fold``
GPUs, as a fold does), spread over the nodes. Each task runs the very ``fsd sweep`` a person
types on a machine by hand (:func:`fsd.cluster.commands.sweep_command`) in a process of its
own that exits when its trials are done, so its memory and GPU are returned
(:func:`fsd.cluster.folds.run_task`: the resolved config travels as text in the task's
arguments, without any password, and is written to a node-local temporary file; node-local
outputs and feature cache; the credentials from the object store, the tracking URI from the
runtime environment: :mod:`fsd.cluster.runtime`). Each worker's sweep run is tagged
``fsd.ray_node``.

The ``--n-trials`` asked for are shared out among the workers (a worker with none is not
started); with only ``--timeout`` each worker runs until it. A local sqlite study cannot be
shared by workers on other machines: with more than one node it is refused. A password
written in ``sweep.storage`` leaves the URL and travels with the driver's other credentials
(as ``PGPASSWORD`` / ``MYSQL_PWD``, which the database drivers read).
"""

from __future__ import annotations

import logging
import math

from fsd.cluster.commands import sweep_command
from fsd.config import Config, ConfigError, dump_config

log = logging.getLogger(__name__)

# Where a password given in sweep.storage's URL travels instead: the variable each database
# driver reads it from.
PASSWORD_ENV = {"postgresql": "PGPASSWORD", "mysql": "MYSQL_PWD"}


def share_trials(n_trials: int, workers: int) -> list[int]:
    """``n_trials`` shared out among ``workers`` (earlier workers get the remainder); 0 trials
    (a timeout only): every worker gets 0, i.e. runs until the timeout."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if not n_trials:
        return [0] * workers
    base, extra = divmod(n_trials, workers)
    return [base + (i < extra) for i in range(workers) if base + (i < extra) > 0]


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


def sweep_task(config_text: str, worker: int, n_trials: int, features_run: str, threads: int,
               secrets: list) -> str:
    """One worker, as ``fsd sweep`` on this node; returns the node's id."""
    from fsd.cluster.folds import run_task

    return run_task(f"sweep worker {worker}", config_text,
                    lambda path, over: sweep_command(path, n_trials, features_run, over),
                    threads, secrets)


def run_workers(cfg: Config, workers: int, features_run: str = "") -> int:
    """Start the workers on the cluster (``cluster.address``), wait for them all, log how each
    ended; 0 when every worker exited 0."""
    from fsd.cluster.folds import _failure
    from fsd.cluster.runtime import connect, secrets_ref
    from fsd.sweep import study

    shares = share_trials(cfg.sweep.n_trials, workers)
    url, password = password_env(study.storage_url(cfg))
    ray = connect(cfg)
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    check_storage(url, nodes)
    # the study exists before the workers race to create it; each then loads it
    study.open_study(cfg, study.make_storage(study.storage_url(cfg)))
    secrets = secrets_ref()
    if password:  # beside the driver's other credentials, never in an argument
        secrets = [ray.put({**ray.get(secrets[0]), **password})]
    text = dump_config(study.apply_params(cfg, {"sweep.storage": url,
                                                "cluster.executor": "local"}))
    c = cfg.cluster
    task = ray.remote(sweep_task)
    threads = max(1, math.ceil(c.cpus_per_fold))
    log.info("sweep: %d workers on a %d-node Ray cluster sharing study %r in %s (trials each: "
             "%s)", len(shares), nodes, study.study_name(cfg), url,
             ", ".join(str(s) if s else "until the timeout" for s in shares))
    refs = [task.options(name=f"fsd-sweep-{i}", num_cpus=c.cpus_per_fold,
                         num_gpus=c.gpus_per_fold, scheduling_strategy="SPREAD",
                         max_retries=c.max_retries).remote(
                text, i, share, features_run, threads, secrets)
            for i, share in enumerate(shares)]
    failed = 0
    for i, ref in enumerate(refs):
        try:
            node = ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - every failure is reported, the others kept
            failed += 1
            log.error("%s", _failure("sweep worker", i, exc, None))
            continue
        log.info("sweep worker %d on node %s: done (%s)", i, node,
                 f"{shares[i]} trials" if shares[i] else "until the timeout")
    return 1 if failed else 0
