"""What the MLflow UI opens on: `fsd ui` serves MLflow's page with the model-training view as
the browser's default (MLflow 3.17 reads the view from the URL or localStorage, not from the
experiment); the experiment's tag and description."""

import json
import subprocess
import sys
from pathlib import Path

from fsd.tracking.experiment import ML_WORKFLOW, WORKFLOW_STORAGE_KEY
from fsd.tracking.ui_app import SNIPPET, with_default_view

REPO = Path(__file__).resolve().parents[1]


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


def test_fsd_ui_serves_mlflows_page_with_the_line_and_each_experiments_main_runs(tmp_path):
    code = (
        "import os, mlflow\n"
        f"uri = 'sqlite:///{tmp_path}/m.db'\n"
        "os.environ['_MLFLOW_SERVER_FILE_STORE'] = uri\n"
        "mlflow.set_tracking_uri(uri)\n"
        f"exp = mlflow.create_experiment('e', artifact_location='{tmp_path}/a')\n"
        "with mlflow.start_run(experiment_id=exp, tags={'fsd.stage': 'main'}) as main:\n"
        "    with mlflow.start_run(nested=True, tags={'fsd.stage': 'featurize'}) as step:\n"
        "        pass\n"
        "from fsd.tracking import ui_app\n"
        "from mlflow.server import app\n"
        "ui_app._install(app)\n"
        "page = app.test_client().get('/')\n"
        "body = page.get_data(as_text=True)\n"
        "print(page.status_code, ui_app.SNIPPET in body, 'root' in body,"
        " page.headers.get('Cache-Control'), main.info.run_id in body, step.info.run_id in body,"
        " 'metrics.`val_map3`' in body)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-2000:]
    # the page, its line, not cached; the main run expanded (not its steps), the columns
    assert out.stdout.split() == ["200", "True", "True", "no-store", "True", "False", "True"]


def _bundle() -> str:
    import mlflow

    js = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    return "".join(p.read_text(errors="ignore") for p in js.glob("*.js"))


def test_the_page_keeps_the_assistant_closed_and_the_bundle_reads_those_keys():
    """MLflow 3.17 opens its Assistant panel by itself on a browser's first visit (over a
    quarter of the runs table) unless it stored that it did; the page stores it, and the
    panel closed, where the browser holds nothing (a user who opens it keeps it open)."""
    from fsd.tracking.ui_app import ASSISTANT_AUTO_OPENED_KEY, ASSISTANT_PANEL_KEY

    assert f"if(!L.getItem('{ASSISTANT_AUTO_OPENED_KEY}'))" in SNIPPET
    assert f"L.setItem('{ASSISTANT_AUTO_OPENED_KEY}','true')" in SNIPPET
    assert f"if(!L.getItem('{ASSISTANT_PANEL_KEY}'))L.setItem('{ASSISTANT_PANEL_KEY}','false')" \
        in SNIPPET
    text = _bundle()
    assert 'key:"mlflow.assistant.fab.autoOpenedOnFirstLoad",version:1' in text
    assert 'key:"mlflow.assistant.panelOpen",version:1' in text
    assert ASSISTANT_AUTO_OPENED_KEY == "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1"
    assert ASSISTANT_PANEL_KEY == "mlflow.assistant.panelOpen_v1"


def test_each_experiment_opens_on_its_pipelines_steps_and_headline_columns():
    """The runs table's state (MLflow's LocalStorageUtils: ``MLflowLocalStorage-1.1-
    ExperimentPage-<JSON ids>-ReactComponentState``) gets the headline columns where the
    browser has none, and every main run expanded unless the user collapsed it."""
    from fsd.tracking.experiment import HEADLINE_COLUMNS
    from fsd.tracking.ui_app import EXPERIMENT_PAGE_KEY, pages_script

    script = pages_script({"7": ["a" * 32, "b" * 32]})
    assert '{"7": ["' + "a" * 32 + '", "' + "b" * 32 + '"]}' in script
    assert json.dumps(list(HEADLINE_COLUMNS)) in script
    assert "if(!(r in st.runsExpanded))st.runsExpanded[r]=true" in script  # false stays false
    assert "st=s?JSON.parse(s):{selectedColumns:C}" in script  # a stored state keeps its columns
    assert pages_script({}) == ""
    assert "</script>" not in pages_script({"1": ["</script><script>alert(1)"]})[:-9]
    assert with_default_view("<head></head>", {"1": ["x"]}).count("<script>") == 2
    # what 3.17's bundle reads: the store's key, its columns' canonical keys, the expansion
    text = _bundle()
    assert 'getStoreForComponent("ExperimentPage"' in text
    assert '["MLflowLocalStorage",r.version,this.scope,e].join("-")' in text
    assert 'r.version="1.1"' in text and 'reactComponentStateKey="ReactComponentState"' in text
    assert "JSON.stringify(e.sort())" in text  # the scope: the sorted experiment ids as JSON
    assert 'I=(e,t)=>e+".`"+t+"`"' in text  # makeCanonicalSortKey: metrics.`oof_map3`
    assert '"selectedColumns","columnOrder","columnWidths","runsExpanded"' in text
    assert EXPERIMENT_PAGE_KEY.format(ids=json.dumps(["7"]).replace(" ", "")) == \
        'MLflowLocalStorage-1.1-ExperimentPage-["7"]-ReactComponentState'


def test_the_experiment_carries_a_saved_view_the_ui_lists(tmp_path, monkeypatch):
    """A saved view is an experiment tag MLflow 3.17's "Views" menu lists (any MLflow UI,
    plain `mlflow ui` too): its envelope as the bundle checks it, the headline columns."""
    import mlflow

    from fsd.tracking.experiment import HEADLINE_COLUMNS, SAVED_VIEW_NAME, prepare_experiment
    from fsd.tracking.tags import TAG_SAVED_VIEW as SAVED_VIEW_TAG

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/m.db")
    exp = mlflow.create_experiment("views", artifact_location=str(tmp_path / "a"))
    prepare_experiment(exp)
    tags = mlflow.get_experiment(exp).tags
    view = json.loads(tags[SAVED_VIEW_TAG])
    assert view["name"] == SAVED_VIEW_NAME and isinstance(view["createdAt"], int)
    state = json.loads(view["state"])
    assert state["selectedColumns"] == list(HEADLINE_COLUMNS)
    assert "runsExpanded" not in state  # not shareable: the UI drops it from a view
    text = _bundle()
    assert 'o6:()=>$' in text and '$="mlflow.sharedViewState."' in text
    assert '"string"!==typeof i.name||"number"!==typeof i.createdAt||"string"!==typeof i.state' \
        in text
    # a user's own edit of the view stays
    mlflow.MlflowClient().set_experiment_tag(exp, SAVED_VIEW_TAG, "{}")
    prepare_experiment(exp)
    assert mlflow.get_experiment(exp).tags[SAVED_VIEW_TAG] == "{}"
    # and the description promises no metric sort on the Models tab (3.17 has none)
    note = tags["mlflow.note.content"]
    assert "does not sort that" in note and "ranks the logged models" not in note
