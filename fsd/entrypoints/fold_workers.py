"""Train several folds at once, each in its own ``fsd train-fold`` process.

One process trains a fold with ~1.1 of 2 cores busy (validation, batch building, TTA and
graph tracing are largely serial), so ``fsd main`` with ``train.fold_workers: 2`` finishes
the folds ~1.5x sooner on this project's 2-core machine. Each worker is the same command a
user runs on another machine (``fsd train-fold --fold K``), with the fully resolved config,
the featurize run and the parent run passed explicitly; its run shows under ``main`` through
the ``mlflow.parentRunId`` tag. A worker that fails leaves its checkpoint: the other workers
finish their folds, no new fold starts, and rerunning ``fsd main`` resumes it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import mlflow

from fsd.config import Config, dump_config
from fsd.train.experimentdir import ExperimentDir

log = logging.getLogger(__name__)


class FoldWorkerError(RuntimeError):
    """One or more fold workers exited with an error (their folds can be resumed)."""


def worker_env(n_workers: int) -> dict[str, str]:
    """The environment of one worker: the parent's, without the launcher's run (each worker
    opens its own), the tracking URI made explicit, and a share of the cores as threads."""
    env = dict(os.environ)
    env.pop("MLFLOW_RUN_ID", None)  # under `mlflow run`: that run is main's, not the fold's
    env["MLFLOW_TRACKING_URI"] = mlflow.get_tracking_uri()
    threads = str(max(1, (os.cpu_count() or 1) // n_workers))
    for name in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"):
        env.setdefault(name, threads)
    env.setdefault("TF_NUM_INTEROP_THREADS", "1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


class _Scheduler:
    """Starts ``n`` fold workers at a time and collects them, on its own thread, so that the
    caller's thread stays free for work such as the baselines (which log to MLflow, whose
    active run belongs to the caller's thread)."""

    def __init__(self, commands: dict[int, list[str]], env: dict[str, str], n: int,
                 poll_s: float):
        self.commands, self.env, self.n, self.poll_s = commands, env, n, poll_s
        self.queue = list(commands)
        self.running: dict[int, subprocess.Popen] = {}
        self.failed: dict[int, int] = {}
        self.started = threading.Event()  # the first workers are up
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while (self.queue or self.running) and not self.stop.is_set():
                while self.queue and len(self.running) < self.n and not self.failed:
                    fold = self.queue.pop(0)
                    self.running[fold] = subprocess.Popen(self.commands[fold], env=self.env)
                    log.info("fold %d: worker pid %d started", fold, self.running[fold].pid)
                self.started.set()
                self.stop.wait(self.poll_s)
                self._collect()
                if self.failed and not self.running:
                    break
        except BaseException as exc:  # re-raised on the caller's thread
            self.error = exc
        finally:
            self.started.set()

    def _collect(self) -> None:
        for fold, proc in list(self.running.items()):
            rc = proc.poll()
            if rc is None:
                continue
            del self.running[fold]
            if rc:
                self.failed[fold] = rc
                log.error("fold %d: worker exited with code %d; the other workers finish "
                          "their folds, and a rerun resumes this one", fold, rc)
            else:
                log.info("fold %d: worker finished", fold)

    def terminate(self) -> None:
        self.stop.set()
        for proc in list(self.running.values()):
            proc.terminate()  # each has checkpointed its last epoch: a rerun resumes them
        for proc in list(self.running.values()):
            proc.wait()


def train_folds_in_workers(cfg: Config, folds: list[int], features_run: str, parent_run: str,
                           run_id_path, poll_s: float = 1.0,
                           meanwhile: Callable[[], None] | None = None) -> dict[int, str]:
    """Train ``folds`` with ``cfg.train.fold_workers`` processes at a time; return each fold's
    run id (read from ``run_id_path(fold)``, the file a worker writes into its fold's folder).

    ``meanwhile()`` runs in this thread once the first workers have started, while another
    thread keeps starting the next fold as soon as a worker finishes: the baselines of a full
    dataset take longer than one round of folds, and must not hold the folds back.
    """
    n = max(1, min(cfg.train.fold_workers, len(folds)))
    cfg_path = ExperimentDir.of(cfg).pipeline_config(parent_run)
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(dump_config(cfg))
    commands = {fold: [sys.executable, "-m", "fsd", "train-fold", "--config", str(cfg_path),
                       "--fold", str(fold), "--features-run", features_run,
                       "--parent-run", parent_run, "--no-progress"] for fold in folds}
    scheduler = _Scheduler(commands, worker_env(n), n, poll_s)
    thread = threading.Thread(target=scheduler.run, name="fold-workers", daemon=True)
    log.info("training folds %s with %d worker processes", folds, n)
    try:
        thread.start()
        scheduler.started.wait()
        if meanwhile is not None:
            meanwhile()
        while thread.is_alive():
            thread.join(0.5)
    except BaseException:
        scheduler.terminate()
        thread.join()
        raise
    if scheduler.error is not None:
        raise scheduler.error
    if scheduler.failed:
        raise FoldWorkerError(
            "fold workers failed: " + ", ".join(f"fold {f} (exit code {rc})"
                                               for f, rc in sorted(scheduler.failed.items()))
            + (f"; folds {scheduler.queue} were not started" if scheduler.queue else "")
            + "; rerun the same command to resume")
    return {fold: Path(run_id_path(fold)).read_text().strip() for fold in folds}
