"""A step's run: the experiment it goes into, opening it, resuming an interrupted one, and
marking runs whose process is gone KILLED (an explicit call, made when a step starts)."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from fsd.config import Config
from fsd.processes import proc_start, process_alive
from fsd.tracking.descriptions import data_summary, describe
from fsd.tracking.params import log_config
from fsd.tracking.tags import (
    TAG_CONFIG,
    TAG_CONTINUES,
    TAG_HOST,
    TAG_NOTE,
    TAG_PID,
    TAG_PROC_START,
    TAG_REAPED,
    TAG_RESUMED_FROM_PID,
    TAG_STAGE,
)

if TYPE_CHECKING:
    from mlflow.entities import Run

log = logging.getLogger(__name__)

# Runs that train: MLflow samples CPU, memory (and GPU where pynvml finds one) beside them.
SYSTEM_METRICS_STAGES = ("train_fold", "sweep")


def set_experiment(cfg: Config) -> str:
    """Select (or create) the config's experiment; return its id."""
    import mlflow
    from mlflow.tracking import MlflowClient

    if "MLFLOW_TRACKING_URI" not in os.environ and mlflow.get_tracking_uri().startswith("file:"):
        # MLflow 3 refuses the plain ./mlruns file store; sqlite is its own recommended default.
        mlflow.set_tracking_uri("sqlite:///mlflow.db")
    active = mlflow.active_run()
    launched_by = active.info.run_id if active else os.environ.get("MLFLOW_RUN_ID")
    if launched_by:
        # `mlflow run` (or a parent step) opened a run in the experiment it was told; that
        # experiment wins, so nested steps and later steps launched the same way find it.
        exp_id = MlflowClient().get_run(launched_by).info.experiment_id
        mlflow.set_experiment(experiment_id=exp_id)
        _tag_experiment_kind(exp_id)
        return exp_id
    exp = mlflow.set_experiment(cfg.experiment_name)
    _tag_experiment_kind(exp.experiment_id, exp.tags)
    return exp.experiment_id


def _tag_experiment_kind(exp_id: str, tags: dict | None = None) -> None:
    """The experiment's kind and description (:func:`fsd.tracking.experiment.prepare_experiment`)."""
    from fsd.tracking.experiment import prepare_experiment

    prepare_experiment(exp_id, tags)


@contextmanager
def stage_run(
    cfg: Config, stage: str, *, nested: bool = False, tags: dict[str, str] | None = None,
    run_name: str | None = None,
) -> Iterator[Run]:
    """A step starts: the experiment's dead runs are marked KILLED (:func:`reap_dead_runs`),
    then the step's run opens (:func:`open_run`), naming the dead run of the same stage and
    config it continues (featurize resumes its shards, main skips its finished steps)."""
    reaped = reap_dead_runs(set_experiment(cfg))
    continued = continued_run(reaped, stage, cfg.name)
    if continued and TAG_CONTINUES not in (tags or {}):
        tags = {**(tags or {}), TAG_CONTINUES: continued}
    with open_run(cfg, stage, nested=nested, tags=tags, run_name=run_name) as run:
        yield run


@contextmanager
def open_run(
    cfg: Config, stage: str, *, nested: bool = False, tags: dict[str, str] | None = None,
    run_name: str | None = None,
) -> Iterator[Run]:
    """A run for one stage, with the fully resolved config logged as params and config.yaml;
    touches no other run."""
    import mlflow

    set_experiment(cfg)
    name = run_name or cfg.tracking.run_name or f"{stage}"
    all_tags = {TAG_STAGE: stage, TAG_CONFIG: cfg.name, **process_tags(), **(tags or {})}
    with mlflow.start_run(run_name=name, nested=nested, tags=all_tags,
                          log_system_metrics=system_metrics(stage)) as run:
        log_config(cfg, stage)
        if TAG_NOTE not in run.data.tags:
            describe(f"**{stage}** of `{cfg.name}` on {data_summary(cfg)}: running.")
        yield run


@contextmanager
def resume_run(run_id: str, *, nested: bool = False, stage: str = "train_fold") -> Iterator[Run]:
    """Reopen the interrupted run ``run_id`` in its own experiment (it may live in another,
    e.g. `mlflow run`'s default), retagged with the process that now runs it."""
    import mlflow
    from mlflow.tracking import MlflowClient

    run = MlflowClient().get_run(run_id)
    mlflow.set_experiment(experiment_id=run.info.experiment_id)
    with mlflow.start_run(run_id=run_id, nested=nested,
                          log_system_metrics=system_metrics(stage)) as active:
        mlflow.set_tags({**process_tags(), TAG_RESUMED_FROM_PID: run.data.tags.get(TAG_PID, "")})
        yield active


def continued_run(reaped: list[Run], stage: str, config_name: str) -> str:
    """The newest of the ``reaped`` runs of the same stage and config ('' when none)."""
    same = [r for r in reaped if r.data.tags.get(TAG_STAGE) == stage
            and r.data.tags.get(TAG_CONFIG) == config_name]
    return max(same, key=lambda r: r.info.start_time or 0).info.run_id if same else ""


def system_metrics(stage: str) -> bool | None:
    """Whether a run of ``stage`` samples CPU/memory/GPU: training stages, when psutil is
    importable (None leaves MLflow's own setting, MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING)."""
    if stage not in SYSTEM_METRICS_STAGES:
        return None
    try:
        import psutil  # noqa: F401
    except ImportError:
        return None
    return True


def process_tags(pid: int | None = None) -> dict[str, str]:
    """The tags naming the process that runs a run: pid, host name, start time."""
    pid = os.getpid() if pid is None else pid
    return {TAG_PID: str(pid), TAG_HOST: socket.gethostname(), TAG_PROC_START: proc_start(pid)}


def run_process_gone(run: Run) -> bool:
    """A RUNNING run started on this host whose process no longer exists. Runs of other hosts,
    and runs without the process tags (started elsewhere or by an older version), are not
    judged."""
    tags = run.data.tags
    if run.info.status != "RUNNING" or tags.get(TAG_HOST) != socket.gethostname():
        return False
    try:
        pid = int(tags.get(TAG_PID, ""))
    except ValueError:
        return False
    return not process_alive(pid, tags.get(TAG_PROC_START, ""))


def reap_dead_runs(experiment_id: str) -> list[Run]:
    """Mark KILLED every RUNNING run of the experiment whose process (on this host) is gone;
    returns those runs (as they were). Called when a step starts, so a kill -9 or a crash does
    not leave runs RUNNING forever."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        runs = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'",
                                  max_results=1000)
    except Exception as exc:  # never let housekeeping stop a step
        log.debug("cannot look for dead runs: %s", exc)
        return []
    reaped = []
    for run in runs:
        if not run_process_gone(run):
            continue
        rid = run.info.run_id
        pid = run.data.tags.get(TAG_PID)
        try:
            client.set_tag(rid, TAG_REAPED, f"process {pid} on {socket.gethostname()} was gone "
                           f"when process {os.getpid()} started a step; marked KILLED")
            client.set_terminated(rid, status="KILLED")
        except Exception as exc:
            log.warning("could not mark run %s KILLED: %s", rid, exc)
            continue
        log.warning("run %s (%s) was left RUNNING by process %s, which is gone: marked KILLED",
                    rid, run.data.tags.get("mlflow.runName", ""), pid)
        reaped.append(run)
    return reaped


def reap_if_gone(run_id: str) -> None:
    """Mark the interrupted run ``run_id`` KILLED when it is RUNNING and its process is gone
    (with the other dead runs of its experiment)."""
    from mlflow.tracking import MlflowClient

    try:
        run = MlflowClient().get_run(run_id)
    except Exception:
        return
    if run_process_gone(run):
        reap_dead_runs(run.info.experiment_id)


def unfinished_run(run_id: str) -> str:
    """``run_id`` when that run was left open by an interrupted step (RUNNING, FAILED or
    KILLED) in this tracking store, else ''."""
    from mlflow.tracking import MlflowClient

    if not run_id:
        return ""
    try:
        status = MlflowClient().get_run(run_id).info.status
    except Exception:  # the run may live in another tracking store; start a fresh one
        return ""
    return run_id if status in ("RUNNING", "FAILED", "KILLED") else ""
