"""Folds and baselines as Ray tasks (``fsd main --executor ray``).

Each task runs the command a person would run by hand on that node (``fsd train-fold
--fold K``, ``fsd baseline``; :mod:`fsd.cluster.commands`) in its own process, which exits
when its work is done, so a GPU's memory goes back to the node. Nodes share no disk:

- the fully resolved config reaches a task as text (a task argument, which Ray's dashboard
  shows: :func:`task_config` drops the sweep database's password from it) and is written
  to a temporary folder on the node, which also holds the task's outputs; the features are
  fetched from the featurize run's artifacts into a cache of the node's own;
- the tracking URI comes in Ray's runtime environment, the credentials through the object
  store (:mod:`.runtime`: Ray logs a runtime environment on every node);
- a fold's checkpoint is uploaded to its run's artifacts after each epoch, so that Ray's
  retry of a task whose node died resumes it on another node (``fsd train-fold`` does both
  under ``cluster.executor: ray``).

The driver registers nothing here: it learns each fold's run from the tracking server.
"""

from __future__ import annotations

import logging
import math
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from fsd.cluster.commands import RAY_NODE_ENV, baseline_command, fold_command, worker_env
from fsd.config import Config, dump_config

log = logging.getLogger(__name__)


class TaskFailed(RuntimeError):
    """A fold's or a baseline's process exited with an error on a Ray node."""


class ClusterError(RuntimeError):
    """Some tasks failed for good; the others' runs are kept, and a rerun resumes."""


def _death_signal():
    """A function for the child to call before exec, so that it is killed when the Ray worker
    that started it dies (Linux's PR_SET_PDEATHSIG), and a dead node's or a cancelled task's
    fold never trains on as an orphan; None where there is no such call. Resolved here, in the
    parent: between fork and exec the child only calls it (no import, no lock)."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG


def node_scratch(node: str) -> Path:
    """This node's own folder for fsd (under the system's temporary folder): its feature cache
    is shared by the tasks on the node; each task's outputs go in a folder of their own."""
    return Path(tempfile.gettempdir()) / f"fsd-ray-{node[:16]}"


def task_config(cfg: Config) -> str:
    """``cfg`` as a task gets it: the fully resolved config without the sweep database's
    password (a task's arguments show in Ray's dashboard; no fold or baseline reads it)."""
    import copy

    from fsd.sweep.study import redact

    safe = copy.deepcopy(cfg)
    safe.sweep.storage = redact(cfg.sweep.storage)
    return dump_config(safe)


def run_task(label: str, config_text: str, command, threads: int, secrets: list) -> str:
    """The body of a Ray task: write the config on this node, run ``command(config_path,
    overrides)`` in a process of its own with node-local outputs and cache, the driver's
    credentials (``secrets``: :func:`~fsd.cluster.runtime.secrets_ref`) in its environment,
    and return the node's id; raise :class:`TaskFailed` naming ``label`` and the node when
    it fails."""
    import ray

    from fsd.cluster.runtime import task_environment

    node = ray.get_runtime_context().get_node_id()
    scratch = node_scratch(node)
    scratch.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="task-", dir=scratch))
    try:
        cfg_path = work / "config.yaml"
        cfg_path.write_text(config_text)
        overrides = [f"output_dir={work / 'outputs'}", f"store.cache_dir={scratch / 'cache'}"]
        # this worker's environment (Ray's runtime environment is in it) and the credentials
        env = worker_env(threads, base=task_environment(secrets))
        env[RAY_NODE_ENV] = node
        log.info("%s: starting on Ray node %s", label, node)
        proc = subprocess.run(command(cfg_path, overrides), env=env, cwd=work,
                              stdin=subprocess.DEVNULL, preexec_fn=_death_signal())
        if proc.returncode:
            raise TaskFailed(f"{label} failed on Ray node {node} (exit code {proc.returncode}); "
                             "its log is the task's output in the Ray dashboard")
        return node
    finally:
        shutil.rmtree(work, ignore_errors=True)  # this task's own folder, nothing else


def fold_task(config_text: str, fold: int, features_run: str, parent_run: str,
              threads: int, secrets: list) -> str:
    """One fold, as ``fsd train-fold --fold K`` on this node; returns the node's id."""
    return run_task(f"fold {fold}", config_text,
                    lambda path, over: fold_command(path, fold, features_run, parent_run, over),
                    threads, secrets)


def baseline_task(config_text: str, model: str, features_run: str, parent_run: str,
                  threads: int, secrets: list) -> str:
    """One baseline model, as ``fsd baseline`` on this node; returns the node's id."""
    return run_task(f"baseline {model}", config_text,
                    lambda path, over: baseline_command(path, model, features_run, parent_run,
                                                        over),
                    threads, secrets)


def train_on_ray(cfg: Config, folds: list[int], baselines: list[str], features_run: str,
                 parent_run: str, fold_node=None) -> dict[str, str]:
    """Run ``folds`` and ``baselines`` as Ray tasks side by side and wait for all of them;
    returns what ran where ("fold 3" -> node id). A task that fails for good does not stop
    the others: when all have ended, :class:`ClusterError` names every failed one and its
    node (``fold_node(fold)``, the tracking server's word, where the task could not say)."""
    from fsd.cluster.runtime import connect, local_store, secrets_ref, task_env

    ray = connect(cfg)
    secrets = secrets_ref()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    uri = task_env()["MLFLOW_TRACKING_URI"]
    if local_store(uri) and len(nodes) > 1:
        raise ClusterError(f"the tracking store {uri} is a file on this machine, which the "
                           f"other nodes of this {len(nodes)}-node Ray cluster cannot reach: "
                           "run an MLflow tracking server (docs/tracking-server.md) and set "
                           "MLFLOW_TRACKING_URI to it")
    text = task_config(cfg)
    c = cfg.cluster
    threads = max(1, math.ceil(c.cpus_per_fold))
    fold_remote, baseline_remote = ray.remote(fold_task), ray.remote(baseline_task)
    fold_needs = {"num_cpus": c.cpus_per_fold, "num_gpus": c.gpus_per_fold,
                  "max_retries": c.max_retries}
    labels = {}
    for fold in folds:  # the folds first: they are the long tasks
        ref = fold_remote.options(name=f"fsd-fold-{fold}", **fold_needs).remote(
            text, fold, features_run, parent_run, threads, secrets)
        labels[ref] = ("fold", fold)
    for model in baselines:
        ref = baseline_remote.options(name=f"fsd-baseline-{model}", num_gpus=0,
                                      num_cpus=c.cpus_per_baseline,
                                      max_retries=c.max_retries).remote(
            text, model, features_run, parent_run, threads, secrets)
        labels[ref] = ("baseline", model)
    log.info("ray: %d fold and %d baseline tasks submitted", len(folds), len(baselines))
    placed, failed = {}, []
    pending = list(labels)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        kind, what = labels[done[0]]
        try:
            placed[f"{kind} {what}"] = ray.get(done[0])
            log.info("%s %s: finished on Ray node %s", kind, what, placed[f"{kind} {what}"])
        except Exception as exc:  # noqa: BLE001 - every failure is reported below
            failed.append(_failure(kind, what, exc, fold_node))
            log.error("%s", failed[-1])
    if failed:
        raise ClusterError("; ".join(failed) + "; the other tasks' runs are kept: rerun the "
                           "same command to resume")
    return placed


def _failure(kind: str, what, exc: BaseException, fold_node) -> str:
    """One line naming a failed task and its node."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, TaskFailed):
        return str(cause)
    node = fold_node(what) if kind == "fold" and fold_node is not None else ""
    where = f"on Ray node {node}" if node else "(node unknown: it had not started a run)"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{kind} {what} failed {where}: {type(exc).__name__}{': ' + first if first else ''}"
