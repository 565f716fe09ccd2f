"""What `fsd ui`'s page stores for MLflow 3.17's UI (its own localStorage keys) and what the
experiment carries for it (a saved view), checked against the UI bundle that reads them."""

import json
from pathlib import Path

from fsd.tracking.ui_app import SNIPPET, with_default_view


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
