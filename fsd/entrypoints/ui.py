"""Open the tracking store in MLflow's UI, on the model-training view wherever a user enters.

MLflow's own server app (``mlflow ui``), but the page sets the browser's default view to
"machine learning" when the browser has none (MLflow 3.17 otherwise opens experiments on the
GenAI overview and run pages with the GenAI sidebar): see ``fsd/tracking/ui_app.py``.
"""

from __future__ import annotations

import argparse
import logging
import os

from fsd.config import Config

HELP = "MLflow's UI on the tracking store, opening on the training runs (model-training view)"
NEEDS_CONFIG = False  # the tracking store is all it needs
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend-store-uri",
                   default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"),
                   help="the tracking store (default: $MLFLOW_TRACKING_URI or %(default)s)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)


def run(cfg: Config | None, args: argparse.Namespace) -> int:
    from fsd.tracking.links import print_ui_urls
    from fsd.tracking.ui_app import serve

    base = f"http://{args.host}:{args.port}"
    print(f"MLflow UI at {base} (Ctrl-C stops it); the experiments' runs:")
    print_ui_urls(base, uri=args.backend_store_uri)
    serve(args.backend_store_uri, args.host, args.port)
    return 0
