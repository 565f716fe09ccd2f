"""Serve a registered ensemble over HTTP: MLflow's own scoring app behind a guarding front.

The app is the one `mlflow models serve` runs (``mlflow.pyfunc.scoring_server.init`` on the
loaded model), so the URIs (``models:/<name>@<alias>``, ``models:/<name>/<version>``,
``runs:/<run>/<ensemble.model_name>-tta-ensemble``), the routes (``/invocations``, ``/ping``,
``/health``, ``/version``) and
the request formats (JSON ``dataframe_split`` / ``dataframe_records`` / ``inputs`` /
``instances`` with ``params``, CSV, parquet) are MLflow's. In front of it
(:mod:`fsd.serving.front`): a request-body limit enforced while reading, before anything is
parsed (413); a per-request time limit (503); 4xx for every client mistake (a missing
Content-Type, a body that is not JSON, an extra column, an unknown param); error bodies of
at most a few hundred characters that never include payload bytes, paths or traces.

Use it for clients you do not control; `mlflow models serve` stays the plain MLflow way (same
model, same requests; its error bodies quote the request and it takes any body size).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
from pathlib import Path

from fsd.config import Config

HELP = "serve a registered ensemble (MLflow's scoring app) with body/time limits and short errors"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="",
                   help="model URI (default: models:/<ensemble.model_name>@<ensemble.alias>)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("-p", "--port", type=int, default=5001, help="port (default: %(default)s)")
    p.add_argument("--max-body-bytes", type=int, default=16 * 2**20,
                   help="largest request body accepted, in bytes (default: %(default)s = 16 MiB)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="per-request time limit in seconds (default: %(default)s)")
    p.add_argument("--header-timeout", type=float, default=10.0,
                   help="seconds a request's headers may take, from the connection opening or "
                        "the previous answer; also closes idle fresh connections "
                        "(default: %(default)s)")
    p.add_argument("--idle-timeout", type=float, default=5.0,
                   help="seconds an idle keep-alive connection stays open (default: %(default)s)")
    p.add_argument("--max-connections", type=int, default=64,
                   help="open connections at most; a new one takes the place of the oldest "
                        "still waiting for its request, else it is closed (default: %(default)s)")
    p.add_argument("--max-connections-per-client", type=int, default=16,
                   help="open connections from one address at most, as --max-connections "
                        "(default: %(default)s)")
    p.add_argument("--token-file", default="", metavar="FILE",
                   help="require 'Authorization: Bearer <token>' on every request, the token "
                        "read from FILE (or from the FSD_SERVE_TOKEN environment variable); "
                        "/ping and /health stay open")
    p.add_argument("--insecure", action="store_true",
                   help="allow listening on a non-loopback address without a token")


def read_token(token_file: str) -> str | None:
    """The bearer token from ``token_file`` or ``FSD_SERVE_TOKEN`` (None: none given); a
    ValueError naming the file for one that cannot be read or holds no token."""
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read the token file {token_file} "
                             f"({getattr(exc, 'strerror', None) or type(exc).__name__})") from None
        if not token or len(token) < 16 or any(c.isspace() for c in token):
            raise ValueError(f"{token_file} must hold one token of at least 16 characters "
                             "and no spaces")
        return token
    token = os.environ.get("FSD_SERVE_TOKEN", "").strip()
    if token and len(token) < 16:
        raise ValueError("FSD_SERVE_TOKEN must be at least 16 characters")
    return token or None


def is_loopback(host: str) -> bool:
    """Whether ``host`` listens only on this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def build_app(model_uri: str, *, max_body_bytes: int, timeout_s: float,
              token: str | None = None):
    """MLflow's scoring app for ``model_uri`` (loaded now), wrapped in :class:`Front`."""
    from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
    from mlflow.pyfunc import scoring_server

    from fsd.serving.front import Front

    # MLflow's own deadline (read by init) stays behind ours, so ours answers first.
    os.environ[MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.name] = str(int(timeout_s) + 30)
    model = scoring_server.load_model_with_mlflow_config(model_uri)
    app = scoring_server.init(model)
    return Front(app, max_body_bytes=max_body_bytes, timeout_s=timeout_s, token=token)


def run(cfg: Config, args: argparse.Namespace) -> int:
    import uvicorn
    from mlflow.exceptions import MlflowException

    uri = args.model or f"models:/{cfg.ensemble.model_name}@{cfg.ensemble.alias}"
    limits = (args.max_body_bytes, args.timeout, args.header_timeout, args.idle_timeout,
              args.max_connections, args.max_connections_per_client)
    if min(limits) <= 0:
        log.error("--max-body-bytes, --timeout, --header-timeout, --idle-timeout, "
                  "--max-connections and --max-connections-per-client must be positive")
        return 2
    try:
        token = read_token(args.token_file)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    if token is None and not is_loopback(args.host) and not args.insecure:
        log.error("refusing to listen on %s without a token: anyone who can reach it could use "
                  "it. Give --token-file FILE (or FSD_SERVE_TOKEN), listen on 127.0.0.1, or "
                  "say --insecure", args.host)
        return 2
    try:
        app = build_app(uri, max_body_bytes=args.max_body_bytes, timeout_s=args.timeout,
                        token=token)
    except MlflowException as exc:
        log.error("cannot load model %s: %s", uri, exc.message)
        return 2
    log.info("serving %s on http://%s:%d (body <= %d bytes, %g s per request, %s)", uri,
             args.host, args.port, args.max_body_bytes, args.timeout,
             "bearer token required" if token else "no token")
    from fsd.serving.connections import guarded_protocol

    uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
                timeout_keep_alive=args.idle_timeout,
                http=guarded_protocol(args.header_timeout, args.max_connections,
                                      args.max_connections_per_client))
    return 0
