"""The commands a worker runs, and their environment: one definition for the local fold
workers (``train.fold_workers``) and the Ray executor's tasks.

A fold is trained by the same ``fsd train-fold`` a person runs by hand on another machine,
with the fully resolved config, the featurize run and the parent run passed explicitly; a
baseline by ``fsd baseline``. No Ray and no MLflow here: building a command imports neither.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# A Ray task tells the `fsd train-fold` it starts which Ray node it runs on (its run's tag).
RAY_NODE_ENV = "FSD_RAY_NODE_ID"


def fold_command(config_path: str | Path, fold: int, features_run: str, parent_run: str,
                 overrides: list[str] | None = None) -> list[str]:
    """``fsd train-fold`` for one fold, its run a child of ``parent_run``."""
    return [sys.executable, "-m", "fsd", "train-fold", "--config", str(config_path),
            "--fold", str(fold), "--features-run", features_run, "--parent-run", parent_run,
            "--no-progress", *[f"--set={o}" for o in overrides or []]]


def baseline_command(config_path: str | Path, model: str, features_run: str, parent_run: str,
                     overrides: list[str] | None = None) -> list[str]:
    """``fsd baseline`` for one model, its run a child of ``parent_run``."""
    return [sys.executable, "-m", "fsd", "baseline", "--config", str(config_path),
            "--features-run", features_run, "--parent-run", parent_run, "--no-progress",
            f"--set=baseline.models=[{model}]", *[f"--set={o}" for o in overrides or []]]


def sweep_command(config_path: str | Path, n_trials: int, features_run: str,
                  overrides: list[str] | None = None) -> list[str]:
    """``fsd sweep`` as one worker of a shared study runs it (the local executor: it runs its
    ``n_trials`` trials itself; 0: until ``sweep.timeout``, which is in the config)."""
    cmd = [sys.executable, "-m", "fsd", "sweep", "--config", str(config_path),
           "--executor", "local"]
    if n_trials:
        cmd += ["--n-trials", str(n_trials)]
    if features_run:
        cmd += ["--features-run", features_run]
    return cmd + [f"--set={o}" for o in overrides or []]


def worker_env(threads: int, tracking_uri: str | None = None,
               base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of one worker process: ``base`` (default: this process's), without the
    launcher's run (each worker opens its own), the tracking URI made explicit where given,
    and ``threads`` threads for TensorFlow and BLAS."""
    env = dict(os.environ if base is None else base)
    env.pop("MLFLOW_RUN_ID", None)  # under `mlflow run`: that run is main's, not the fold's
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    for name in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"):
        env.setdefault(name, str(max(1, threads)))
    env.setdefault("TF_NUM_INTEROP_THREADS", "1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env
