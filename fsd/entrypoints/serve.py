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
import logging
import os

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
                   help="open connections at most; more are closed as they open "
                        "(default: %(default)s)")


def build_app(model_uri: str, *, max_body_bytes: int, timeout_s: float):
    """MLflow's scoring app for ``model_uri`` (loaded now), wrapped in :class:`Front`."""
    from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
    from mlflow.pyfunc import scoring_server

    from fsd.serving.front import Front

    # MLflow's own deadline (read by init) stays behind ours, so ours answers first.
    os.environ[MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.name] = str(int(timeout_s) + 30)
    model = scoring_server.load_model_with_mlflow_config(model_uri)
    app = scoring_server.init(model)
    return Front(app, max_body_bytes=max_body_bytes, timeout_s=timeout_s)


def run(cfg: Config, args: argparse.Namespace) -> int:
    import uvicorn
    from mlflow.exceptions import MlflowException

    uri = args.model or f"models:/{cfg.ensemble.model_name}@{cfg.ensemble.alias}"
    limits = (args.max_body_bytes, args.timeout, args.header_timeout, args.idle_timeout,
              args.max_connections)
    if min(limits) <= 0:
        log.error("--max-body-bytes, --timeout, --header-timeout, --idle-timeout and "
                  "--max-connections must be positive")
        return 2
    try:
        app = build_app(uri, max_body_bytes=args.max_body_bytes, timeout_s=args.timeout)
    except MlflowException as exc:
        log.error("cannot load model %s: %s", uri, exc.message)
        return 2
    log.info("serving %s on http://%s:%d (body <= %d bytes, %g s per request)", uri, args.host,
             args.port, args.max_body_bytes, args.timeout)
    from fsd.serving.front import guarded_protocol

    uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
                timeout_keep_alive=args.idle_timeout,
                http=guarded_protocol(args.header_timeout, args.max_connections))
    return 0
