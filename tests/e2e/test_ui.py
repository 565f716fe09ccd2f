
"""What the MLflow UI opens on: `fsd ui` serves MLflow's page with the model-training view as
the browser's default (MLflow 3.17 reads the view from the URL or localStorage, not from the
experiment); the experiment's tag and description."""

import subprocess
import sys
from pathlib import Path

import pytest

from fsd.tracking.experiment import ML_WORKFLOW, WORKFLOW_STORAGE_KEY
from fsd.tracking.ui_app import SNIPPET, with_default_view

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def test_the_page_stores_the_training_view_unless_the_browser_has_one():
    html = "<!doctype html><html><head><title>MLflow</title></head><body></body></html>"
    out = with_default_view(html)
    assert out.index(SNIPPET) < out.index("<title>")  # before the UI's own scripts
    assert with_default_view(out) == out  # once
    assert f"getItem('{WORKFLOW_STORAGE_KEY}')" in SNIPPET
    assert f"JSON.stringify('{ML_WORKFLOW}')" in SNIPPET


def test_the_ui_bundle_still_reads_that_key():
    """The key and values are MLflow's (its UI bundle); a new MLflow that renames them fails
    here rather than silently opening on GenAI again."""
    import mlflow

    js = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    text = "".join(p.read_text(errors="ignore") for p in js.glob("main.*.js"))
    assert 'key:"mlflow.workflowType",version:1' in text
    assert 'MACHINE_LEARNING="machine_learning"' in text
    assert WORKFLOW_STORAGE_KEY == "mlflow.workflowType_v1"  # useLocalStorage: `${key}_v${version}`


def test_fsd_ui_serves_mlflows_page_with_the_line(tmp_path):
    code = (
        "import os\n"
        f"os.environ['_MLFLOW_SERVER_FILE_STORE'] = 'sqlite:///{tmp_path}/m.db'\n"
        "from fsd.tracking import ui_app\n"
        "from mlflow.server import app\n"
        "ui_app._install(app)\n"
        "page = app.test_client().get('/')\n"
        "body = page.get_data(as_text=True)\n"
        "print(page.status_code, ui_app.SNIPPET in body, '<div id=\"root\"' in body or 'root' in body,"
        " page.headers.get('Cache-Control'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["200", "True", "True", "no-store"]
