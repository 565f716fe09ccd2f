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
enters; and the tag is still set, for UIs that read it (older 3.x, Databricks).
"""

from __future__ import annotations

import logging

from fsd.tracking.tags import EXPERIMENT_KIND, TAG_EXPERIMENT_KIND, TAG_NOTE

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

The **Models** tab ranks the logged models (sort by `val_map3` for the folds, `oof_map3` for \
the rest); `main`'s `results.md` compares every model of one pipeline on the same folds.
"""


def prepare_experiment(exp_id: str, tags: dict | None = None) -> None:
    """Tag the experiment as model training and give it a description, where it has none (a
    description a user edited stays)."""
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
    except Exception as exc:  # cosmetic: never stop a step for it
        log.debug("cannot tag experiment %s: %s", exp_id, exc)
