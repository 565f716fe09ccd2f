"""MLflow's own server app, opening on the model-training view wherever a user enters.

MLflow 3.17's UI picks its view from the ``workflowType`` URL parameter, else from the
browser's localStorage (``mlflow.workflowType_v1``), else GenAI (see
:mod:`fsd.tracking.experiment`). This app is ``mlflow.server.fastapi_app:app`` unchanged but
for one thing: the UI's page (``index.html``) carries a line of script that stores
``"machine_learning"`` in that key when the browser has no choice stored, before the UI reads
it. Home -> an experiment then lands on its runs, and a run opened from the runs table keeps
the model-training sidebar; a user who switches to GenAI in the sidebar keeps that choice.

Serve it with ``fsd ui`` (``make ui``); ``serve()`` is what that command runs.
"""

from __future__ import annotations

import os
from pathlib import Path

from fsd.tracking.experiment import ML_WORKFLOW, WORKFLOW_STORAGE_KEY

SNIPPET = ("<script>/* fsd: the model-training view unless the user chose */try{if(!window."
           f"localStorage.getItem('{WORKFLOW_STORAGE_KEY}'))window.localStorage.setItem("
           f"'{WORKFLOW_STORAGE_KEY}',JSON.stringify('{ML_WORKFLOW}'))}}catch(e){{}}</script>")


def with_default_view(html: str) -> str:
    """``html`` (the UI's index.html) with :data:`SNIPPET` first in its head (once)."""
    if SNIPPET in html:
        return html
    at = html.find("<head>")
    return html[: at + 6] + SNIPPET + html[at + 6 :] if at >= 0 else SNIPPET + html


def _install(flask_app) -> None:
    from flask import request

    @flask_app.after_request
    def _default_view(response):
        if (request.method == "GET" and response.status_code == 200
                and response.mimetype == "text/html"):
            response.direct_passthrough = False
            response.set_data(with_default_view(response.get_data(as_text=True)))
            # a cached copy without the line (plain `mlflow ui` on this port) must not win
            response.headers["Cache-Control"] = "no-store"
            response.headers.pop("ETag", None)
            response.headers.pop("Last-Modified", None)
        return response


def _app():
    from mlflow.server import app as flask_app
    from mlflow.server.fastapi_app import create_fastapi_app

    _install(flask_app)
    return create_fastapi_app(flask_app)


def serve(backend_store_uri: str, host: str = "127.0.0.1", port: int = 5000,
          artifact_root: str = "") -> None:
    """Run the UI on ``backend_store_uri`` (as ``mlflow ui`` would, one worker)."""
    import uvicorn
    from mlflow.server.constants import (
        ARTIFACT_ROOT_ENV_VAR,
        BACKEND_STORE_URI_ENV_VAR,
        REGISTRY_STORE_URI_ENV_VAR,
    )
    from mlflow.server.handlers import initialize_backend_stores

    root = artifact_root or str(Path("mlruns").resolve())
    os.environ[BACKEND_STORE_URI_ENV_VAR] = backend_store_uri
    os.environ[REGISTRY_STORE_URI_ENV_VAR] = backend_store_uri
    os.environ[ARTIFACT_ROOT_ENV_VAR] = root
    initialize_backend_stores(backend_store_uri, backend_store_uri, root)
    uvicorn.run(_app(), host=host, port=port, log_level="warning")
