"""MLflow's own server app, opening on the answer wherever a user enters.

MLflow 3.17's UI keeps its view in the browser's localStorage; this app is
``mlflow.server.fastapi_app:app`` unchanged but for one thing: the UI's page (``index.html``)
carries a script, run before the UI reads any of it, that writes MLflow's own keys where the
browser holds none (a user's own choices are kept):

- ``mlflow.workflowType_v1`` = ``"machine_learning"``: the model-training view (MLflow's
  default is GenAI: Home -> an experiment would land on the GenAI overview, a run opened from
  the runs table get the GenAI sidebar; see :mod:`fsd.tracking.experiment`);
- ``mlflow.assistant.fab.autoOpenedOnFirstLoad_v1`` = ``true`` and
  ``mlflow.assistant.panelOpen_v1`` = ``false``: the Assistant panel does not open by itself
  over a quarter of the runs table (its button stays);
- per experiment with ``fsd main`` runs, the runs table's state
  (``MLflowLocalStorage-1.1-ExperimentPage-["<id>"]-ReactComponentState``): the headline
  columns (:data:`HEADLINE_COLUMNS`) when the browser has no state for it, and every ``main``
  run expanded to its steps unless the user collapsed it (MLflow keeps ``false`` for that).
  The ``main`` runs are read from the tracking store each time the page is served.

Serve it with ``fsd ui`` (``make ui``); ``serve()`` is what that command runs.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from fsd.tracking.experiment import HEADLINE_COLUMNS, ML_WORKFLOW, WORKFLOW_STORAGE_KEY

log = logging.getLogger(__name__)

ASSISTANT_AUTO_OPENED_KEY = "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1"
ASSISTANT_PANEL_KEY = "mlflow.assistant.panelOpen_v1"
# LocalStorageUtils.getStoreForComponent("ExperimentPage", JSON.stringify([ids].sort()))
EXPERIMENT_PAGE_KEY = "MLflowLocalStorage-1.1-ExperimentPage-{ids}-ReactComponentState"
MAX_EXPANDED = 1000  # main runs expanded, newest first, over all experiments

_MARK = "/* fsd: the view MLflow's UI opens on */"
SNIPPET = (
    f"<script>{_MARK}try{{var L=window.localStorage;"
    f"if(!L.getItem('{WORKFLOW_STORAGE_KEY}'))L.setItem('{WORKFLOW_STORAGE_KEY}',"
    f"JSON.stringify('{ML_WORKFLOW}'));"
    f"if(!L.getItem('{ASSISTANT_AUTO_OPENED_KEY}'))L.setItem('{ASSISTANT_AUTO_OPENED_KEY}','true');"
    f"if(!L.getItem('{ASSISTANT_PANEL_KEY}'))L.setItem('{ASSISTANT_PANEL_KEY}','false');"
    "}catch(e){}</script>")
# D: {experiment id: [main run ids]}; C: the headline columns
_PAGES = (
    "<script>try{var L=window.localStorage,D=%s,C=%s;for(var id in D){"
    "var k=%s.replace('{ids}',JSON.stringify([id])),s=L.getItem(k),"
    "st=s?JSON.parse(s):{selectedColumns:C};st.runsExpanded=st.runsExpanded||{};"
    "D[id].forEach(function(r){if(!(r in st.runsExpanded))st.runsExpanded[r]=true});"
    "L.setItem(k,JSON.stringify(st))}}catch(e){}</script>")


def pages_script(main_runs: dict[str, list[str]]) -> str:
    """The script giving each experiment's runs table its default state: ``main_runs`` maps
    an experiment id to its ``main`` run ids ('' when there are none)."""
    if not main_runs:
        return ""

    def js(value) -> str:  # JSON inside <script>: no "</" can close it
        return json.dumps(value).replace("</", "<\\/")

    return _PAGES % (js(main_runs), js(list(HEADLINE_COLUMNS)), js(EXPERIMENT_PAGE_KEY))


def with_default_view(html: str, main_runs: dict[str, list[str]] | None = None) -> str:
    """``html`` (the UI's index.html) with :data:`SNIPPET` and the experiments' defaults
    (:func:`pages_script`) first in its head (once)."""
    if _MARK in html:
        return html
    script = SNIPPET + pages_script(main_runs or {})
    at = html.find("<head>")
    return html[: at + 6] + script + html[at + 6 :] if at >= 0 else script + html


def main_runs_by_experiment(store) -> dict[str, list[str]]:
    """Each active experiment's ``fsd main`` runs (newest first) in tracking ``store``."""
    from mlflow.entities import ViewType

    from fsd.tracking.tags import TAG_STAGE

    exps = [e.experiment_id for e in store.search_experiments(view_type=ViewType.ACTIVE_ONLY,
                                                              max_results=1000)]
    if not exps:
        return {}
    runs = store.search_runs(exps, f"tags.`{TAG_STAGE}` = 'main'", ViewType.ACTIVE_ONLY,
                             max_results=MAX_EXPANDED, order_by=["attributes.start_time DESC"])
    out: dict[str, list[str]] = {}
    for r in runs:
        out.setdefault(r.info.experiment_id, []).append(r.info.run_id)
    return out


def _install(flask_app) -> None:
    from flask import request

    @flask_app.after_request
    def _default_view(response):
        if (request.method == "GET" and response.status_code == 200
                and response.mimetype == "text/html"):
            try:
                from mlflow.server.handlers import _get_tracking_store

                main_runs = main_runs_by_experiment(_get_tracking_store())
            except Exception as exc:  # the page still opens, on MLflow's own defaults
                log.warning("fsd ui: cannot read the experiments' main runs: %s", exc)
                main_runs = {}
            response.direct_passthrough = False
            response.set_data(with_default_view(response.get_data(as_text=True), main_runs))
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
