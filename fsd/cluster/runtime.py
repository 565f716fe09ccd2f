"""Connecting to a Ray cluster, and what every task's process gets from the driver.

Nodes share no disk: they exchange features, checkpoints and models through the MLflow
tracking server and its artifact store. What a task's process needs from the driver's
environment travels two ways, never in a task's arguments, its logs or a run's tags:

- the settings (the tracking URI, the S3 endpoint, switches) in Ray's runtime environment
  (``env_vars``): Ray writes a job's runtime environment into every node's
  ``runtime_env_agent.log`` and shows it in its dashboard, so nothing secret goes there;
- the credentials (:data:`SECRET_ENV`: the tracking server's, the artifact store's, the sweep
  database's password) as one object in Ray's object store, put by the driver when it
  connects; a task is handed a reference to it (:func:`secrets_ref`, a list holding the
  reference, so Ray passes the reference and not the value) and reads it into the
  environment of the process it starts (:func:`task_environment`).

A node that has a credential in its own environment (e.g. a Kubernetes Secret on its pods)
keeps its own value where the driver has none.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from fsd.config import Config

log = logging.getLogger(__name__)

# Settings a task's process needs from the driver's environment, where set there: the tracking
# server, the artifact store's endpoint, and switches that make a worker behave like the driver.
FORWARDED_ENV = (
    "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "MLFLOW_S3_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_PROFILE",
    "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL",
    "_MLFLOW_SERVER_ARTIFACT_ROOT",
)
# Credentials: through the object store, never the runtime environment (see above).
SECRET_ENV = (
    "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "PGPASSWORD",
)
# {cluster address/job id: the ObjectRef of the driver's credentials}: a reference lives only as long as
# the Ray session that put it, and one process may connect to several in turn (tests do)
_secrets: dict[str, Any] = {}


class RayUnavailable(RuntimeError):
    """Ray is not installed (``pip install 'fsd[ray]'``) or the cluster cannot be reached."""


def task_env() -> dict[str, str]:
    """The settings every task's process gets (the tracking URI made explicit); no secret."""
    import mlflow

    env = {name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)}
    env["MLFLOW_TRACKING_URI"] = absolute_uri(_without_userinfo(mlflow.get_tracking_uri())[0])
    return env


_HOSTED = ("databricks", "databricks-uc", "uc")  # tracking URIs without a scheme, not files


def local_store(uri: str) -> bool:
    """Whether the tracking URI is a file on this machine (sqlite, a file store, a path)."""
    return uri.startswith(("sqlite:", "file:")) or ("://" not in uri and uri not in _HOSTED)


def absolute_uri(uri: str) -> str:
    """A local store's URI with its path made absolute (a task runs in a folder of its own);
    other URIs as they are."""
    from urllib.parse import urlsplit

    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + os.path.abspath(uri[len("sqlite:///"):])
    if uri.startswith("file:"):
        return "file://" + os.path.abspath(urlsplit(uri).path)
    if "://" not in uri and uri not in _HOSTED:
        return os.path.abspath(uri)
    return uri


def driver_secrets() -> dict[str, str]:
    """The driver's credentials (:data:`SECRET_ENV`), with a user and password written into
    the tracking URI moved into MLflow's variables for them."""
    env = {k: os.environ[k] for k in SECRET_ENV if os.environ.get(k)}
    import mlflow

    _, user, password = _without_userinfo(mlflow.get_tracking_uri())
    if user:
        env.setdefault("MLFLOW_TRACKING_USERNAME", user)
    if password:
        env.setdefault("MLFLOW_TRACKING_PASSWORD", password)
    return env


def _without_userinfo(uri: str) -> tuple[str, str, str]:
    """``uri`` without a ``user:password@`` part, the user and the password ('' when none)."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(uri)
    if not parts.netloc or "@" not in parts.netloc:
        return uri, "", ""
    host = parts.netloc.rsplit("@", 1)[1]
    return (urlunsplit(parts._replace(netloc=host)), unquote(parts.username or ""),
            unquote(parts.password or ""))


# How long the driver waits for a cluster's head to answer before it says it cannot reach it
# (ray.init itself keeps retrying an address that does not answer for minutes).
CONNECT_TIMEOUT_S = 10.0


def check_reachable(address: str | None, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise :class:`RayUnavailable` unless a ``host:port`` (or ``ray://host:port``) address
    accepts a TCP connection within ``timeout`` seconds; other forms (none, ``auto``,
    ``local``) are Ray's own to resolve."""
    import socket

    if not address:
        return
    m = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d{1,5})", address.strip())
    if m is None:
        return
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        raise RayUnavailable(
            f"cannot reach the Ray cluster at {address} within {timeout:g} s "
            f"({type(exc).__name__}): is `ray start --head` running there, and its port "
            "open to this machine?") from exc


def connect(cfg: Config) -> Any:
    """Join the cluster named by ``cluster.address`` (else ``RAY_ADDRESS``, else start a local
    one) with :func:`task_env` as the job's runtime environment, and put the driver's
    credentials in the object store (:func:`secrets_ref`); returns the ``ray`` module."""
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailable("cluster.executor=ray needs Ray: pip install 'fsd[ray]'") from exc
    if not ray.is_initialized():
        address = cfg.cluster.address or os.environ.get("RAY_ADDRESS") or None
        check_reachable(address)
        if address is None:
            # Ray runs its workers at nice 15 (so its own daemons stay responsive); on the
            # user's own machine that left the folds yielding to everything else, where the
            # local executor's fold workers run at the user's priority. Read by the raylet
            # this start launches; a cluster joined by address keeps its own setting.
            os.environ.setdefault("RAY_worker_niceness", "0")
        try:
            ray.init(address=address, runtime_env={"env_vars": task_env()},
                     log_to_driver=True, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError) as exc:
            raise RayUnavailable(f"cannot reach the Ray cluster at {address or 'a local start'}: "
                                 f"{type(exc).__name__}") from exc
        log.info("ray: connected to %s (%d nodes)", address or "a local cluster",
                 len(ray.nodes()))
    job = _job_id(ray)
    if job not in _secrets:
        _secrets.clear()
        _secrets[job] = ray.put(driver_secrets())
    return ray


def _job_id(ray: Any) -> str:
    """This driver's job on this cluster: job ids restart at 1 on every cluster, so the
    cluster's own address is part of it."""
    ctx = ray.get_runtime_context()
    return f"{ctx.gcs_address}/{ctx.get_job_id()}"


def secrets_ref() -> list[Any]:
    """What a task is given to reach the driver's credentials: a list holding the reference
    (so Ray hands the task the reference, not the value). Call :func:`connect` first."""
    import ray

    ref = _secrets.get(_job_id(ray)) if ray.is_initialized() else None
    if ref is None:
        raise RuntimeError("connect() first: the credentials are put when the driver connects")
    return [ref]


def task_environment(secrets: list[Any], base: dict[str, str] | None = None) -> dict[str, str]:
    """In a task: ``base`` (default: the task's own environment, which holds the runtime
    environment's settings) with the driver's credentials from ``secrets``
    (:func:`secrets_ref`) where the driver had them."""
    import ray

    env = dict(os.environ if base is None else base)
    env.update(ray.get(secrets[0]) if secrets else {})
    return env
