"""The experiment as the MLflow UI shows it: its kind, its description, and the model-training
view as the browser's default.

What MLflow 3.17's UI reads to choose between its GenAI and model-training views is *not* the
experiment: it is the ``workflowType`` URL parameter, else the browser's localStorage key
``mlflow.workflowType_v1`` (JSON ``"machine_learning"`` or ``"genai"``), else ``"genai"``
(``WorkflowTypeProvider`` in the UI bundle). The experiment tag ``mlflow.experimentKind`` only
feeds the UI when its "workflow selector" flag is off, and 3.17 ships it on, so the experiment
page's redirect (``runs`` vs ``traces``/``overview``) and the run page's sidebar follow the
workflow type alone: Home -> an experiment lands on the GenAI overview, and a run opened from
the runs table (its link drops ``workflowType``) shows the GenAI sidebar, whatever the tag.

So: the printed links carry ``?workflowType=machine_learning``; the UI ``make ui`` / ``fsd ui``
starts (:mod:`fsd.tracking.ui_app`) stores ``machine_learning`` as the browser's default when
it has none (a user's own choice in the sidebar switch is kept), which holds wherever the user
enters; and the tag is still set, for UIs that read it (older 3.x, Databricks). Nothing a
project can store (experiment tags, its kind, run tags, server settings) makes plain
``mlflow ui`` 3.17.2 open on the training runs: the UI reads the kind from the tag only when
a flag of its FeatureUtils is off, and the bundle compiles that flag on (``()=>!0``).

Likewise the Models tab's metric sort: 3.17.2 compiles ``isLoggedModelsFilteringAndSortingEnabled``
as ``() => false`` and keeps its order in component state (no URL parameter, no storage key),
so it sorts by creation time only; the description says so and points at the runs table.
What 3.17 does read from the experiment is a saved view (:func:`saved_view`).
"""

from __future__ import annotations

import logging

from fsd.tracking.tags import EXPERIMENT_KIND, TAG_EXPERIMENT_KIND, TAG_NOTE, TAG_SAVED_VIEW

log = logging.getLogger(__name__)

WORKFLOW_STORAGE_KEY = "mlflow.workflowType_v1"
ML_WORKFLOW = "machine_learning"

DESCRIPTION = """**fsd sound tagging**: every `fsd main` is a `main` run with its steps nested \
under it, in order:

1. `featurize`: decodes the clips; its clip table is the dataset every later run names
1. `fold-<k>`: a CNN trained on the other folds, validated on fold k (logged model `cnn-fold-<k>`)
1. `baseline-<model>`: a scikit-learn model on the summary features, scored out of fold \
(logged model `baseline-<model>`)
1. `ensemble`: the fold CNNs with test-time augmentation, blended with a baseline; logged \
from code and registered

What the figures measure:

- `val_map3`: a fold's CNN on its own fold's clips (fixed lengths, centre crops, no TTA)
- `oof_map3`: out of fold on every clip; for a baseline, its own; for `ensemble` and `main`, \
the registered model, its blend partner and weight chosen on the other folds (the alias moves \
on this figure)
- `cnn_oof_map3`: the CNN fold ensemble alone; `blend_insample_oof_map3`: the served blend \
chosen on every fold (optimistic)

The **Models** tab lists the logged models with their params and figures, one column per \
figure for all of them (`val_map3` for the folds, `oof_map3` for the baselines and the \
ensemble); its chart view draws each figure for every model. MLflow 3.17 does not sort that \
tab by a metric: to rank, sort the **Runs** table by a column (`val_map3`, `oof_map3`). The \
saved view *fsd: headline figures* (Runs -> Views) shows those columns in any MLflow UI; \
`main`'s `results.md` compares every model of one pipeline on the same folds.
"""

# A saved view of the runs table (MLflow's "Views" menu; the UI stores one as an experiment tag
# `mlflow.sharedViewState.<id>` holding {name, createdAt, updatedAt, state}, state the table's
# search facets and UI state as JSON): the headline columns, newest pipeline first.
SAVED_VIEW_NAME = "fsd: headline figures"
# the runs table's headline columns (MLflow's canonical keys `<type>.\`<name>\``): every step's
# figure (main's and the ensemble's oof_map3 / cnn_oof_map3, a fold's val_map3, a baseline's
# oof_map3) and the run's logged models
HEADLINE_COLUMNS = ("metrics.`oof_map3`", "metrics.`cnn_oof_map3`", "metrics.`val_map3`",
                    "metrics.`oof_accuracy`", "attributes.`Models`")


def saved_view(now_ms: int) -> str:
    """The saved view's tag value (its envelope; see :data:`TAG_SAVED_VIEW`)."""
    import json

    state = {"searchFilter": "", "orderByKey": "attributes.start_time", "orderByAsc": False,
             "startTime": "ALL", "lifecycleFilter": "Active", "datasetsFilter": [],
             "modelVersionFilter": "All Runs", "selectedColumns": list(HEADLINE_COLUMNS)}
    return json.dumps({"name": SAVED_VIEW_NAME, "createdAt": now_ms, "updatedAt": now_ms,
                       "state": json.dumps(state)})


def prepare_experiment(exp_id: str, tags: dict | None = None) -> None:
    """Tag the experiment as model training, give it a description and the saved view
    :data:`SAVED_VIEW_NAME`, each where it has none (a user's edits stay)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        if tags is None:
            tags = client.get_experiment(exp_id).tags
        tags = tags or {}
        if TAG_EXPERIMENT_KIND not in tags:
            client.set_experiment_tag(exp_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND)
        if TAG_NOTE not in tags:
            client.set_experiment_tag(exp_id, TAG_NOTE, DESCRIPTION)
        if TAG_SAVED_VIEW not in tags:
            import time

            client.set_experiment_tag(exp_id, TAG_SAVED_VIEW, saved_view(int(time.time() * 1000)))
    except Exception as exc:  # cosmetic: never stop a step for it
        log.debug("cannot tag experiment %s: %s", exp_id, exc)
