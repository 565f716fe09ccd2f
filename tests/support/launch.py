"""Launching the project the way a user does: `mlflow run` and `python -m fsd` subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def subprocess_env(tmp_path: Path) -> dict[str, str]:
    """A user's shell: a tmp sqlite store, this venv on PATH, no run selected in-process."""
    # mlflow.set_experiment in earlier in-process tests leaves MLFLOW_EXPERIMENT_ID behind.
    drop = {"MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update({
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK": "true",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        # the MLproject's `python -m fsd` must be this interpreter, as in an activated venv
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    return env


def mlflow_run(entry: str, tmp_path: Path, *params: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """`mlflow run <repo> -e ENTRY --env-manager local --experiment-name it -P ...`."""
    cmd = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", entry, "--env-manager", "local",
           "--experiment-name", "it"]
    for p in params:
        cmd += ["-P", p]
    return subprocess.run(cmd, cwd=REPO, env=subprocess_env(tmp_path), capture_output=True,
                          text=True, timeout=timeout)


def fsd_command(tmp_path: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m fsd ARGS...` from the repo root."""
    return subprocess.run([sys.executable, "-m", "fsd", *args], cwd=REPO,
                          env=subprocess_env(tmp_path), capture_output=True, text=True,
                          timeout=timeout)
