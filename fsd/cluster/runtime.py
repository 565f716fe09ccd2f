"""Connecting to a Ray cluster, and what every task's process gets from the driver.

Nodes share no disk: they exchange features, checkpoints and models through the MLflow
tracking server and its artifact store. The tracking URI and the credentials travel in Ray's
runtime environment (``env_vars``), read from the driver's environment: never in a task's
arguments, its logs or a run's tags.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from fsd.config import Config

log = logging.getLogger(__name__)

# What a task's process needs from the driver's environment, where set there: the tracking
# server and its credentials, the artifact store's, the sweep database's password, and the
# settings that make a worker behave like the driver.
FORWARDED_ENV = (
    "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION", "AWS_PROFILE", "PGPASSWORD", "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK",
    "KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL", "_MLFLOW_SERVER_ARTIFACT_ROOT",
)


class RayUnavailable(RuntimeError):
    """Ray is not installed (``pip install 'fsd[ray]'``) or the cluster cannot be reached."""


def task_env() -> dict[str, str]:
    """The environment variables every task's process gets (the tracking URI made explicit)."""
    import mlflow

    env = {name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)}
    env["MLFLOW_TRACKING_URI"] = mlflow.get_tracking_uri()
    return env


def connect(cfg: Config) -> Any:
    """Join the cluster named by ``cluster.address`` (else ``RAY_ADDRESS``, else start a local
    one) with :func:`task_env` as the job's runtime environment; returns the ``ray`` module."""
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailable("cluster.executor=ray needs Ray: pip install 'fsd[ray]'") from exc
    if ray.is_initialized():
        return ray
    address = cfg.cluster.address or os.environ.get("RAY_ADDRESS") or None
    try:
        ray.init(address=address, runtime_env={"env_vars": task_env()},
                 log_to_driver=True, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError) as exc:
        raise RayUnavailable(f"cannot reach the Ray cluster at {address or 'a local start'}: "
                             f"{type(exc).__name__}") from exc
    log.info("ray: connected to %s (%d nodes)", address or "a local cluster", len(ray.nodes()))
    return ray
