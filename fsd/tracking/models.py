"""Models as MLflow 3 LoggedModels of their runs, and the metrics that score them.

Each fold's CNN is logged in the Keras flavor, each baseline's final estimator in the
scikit-learn flavor (the ensemble, a pyfunc logged from code: :mod:`fsd.serving.pyfunc`). A
LoggedModel carries a description (``mlflow.note.content``, what the UI shows), the params that
made it (not the whole config) and its validation metrics, each linked to the model
(``model_id``) and to the dataset it was measured on, so the Models tab compares them and
``mlflow.search_logged_models(order_by=[{"field_name": "metrics.val_map3", ...}])`` ranks them.

Why not ``mlflow.<flavor>.log_model``: inside a run it copies every run param onto the model
and every metric the run holds at the model's step (a fold's first epoch, a system-metrics
sample); here the model is created with its own params (``initialize_logged_model``), saved by
the flavor's ``save_model``, uploaded (``log_model_artifacts``), finalized and named as an
output of the run, so nothing reaches it that was not meant for it. Requirements are given,
not inferred (no subprocess loading the model again).

Run-only metrics (timings, per-fold breakdowns) go through :func:`log_run_metrics`, which
never attaches a metric to a model.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from fsd.tracking.tags import TAG_NOTE

log = logging.getLogger(__name__)

KERAS_REQUIREMENTS = ("keras", "tensorflow", "tensorflow-cpu", "numpy")
SKLEARN_REQUIREMENTS = ("scikit-learn", "numpy", "scipy", "skops")


def requirements(names: Sequence[str]) -> list[str]:
    """``name==version`` of each installed package of ``names`` (absent ones skipped)."""
    out = []
    for name in names:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return out


def model_name(text: str) -> str:
    """A LoggedModel name from ``text`` (letters, digits, ``- _ .``)."""
    import re

    return re.sub(r"[^0-9A-Za-z_.-]", "_", text)


def log_logged_model(save: Callable[[str, Any], None], *, name: str, description: str,
                     params: dict[str, Any], model_type: str, step: int = 0,
                     tags: dict[str, str] | None = None):
    """Create a LoggedModel of the active run: ``save(path, mlflow_model)`` writes it with a
    flavor's ``save_model``; returns the LoggedModel (``model_id``, ``models:/<id>``)."""
    import mlflow
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    run_id = mlflow.active_run().info.run_id
    model = mlflow.initialize_logged_model(
        name=model_name(name), source_run_id=run_id, model_type=model_type,
        params={k: str(v) for k, v in params.items()},
        tags={TAG_NOTE: description[:5000], **(tags or {})})
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "model"
            save(str(local), Model(artifact_path=model.artifact_location, run_id=run_id,
                                   model_uuid=model.model_id, model_id=model.model_id))
            client.log_model_artifacts(model.model_id, str(local))
        model = client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    except BaseException:
        client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        raise
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=step)])
    return model


def log_keras_model(path: Path, *, name: str, description: str, params: dict[str, Any],
                    step: int = 0):
    """A saved ``.keras`` model as a Keras-flavor LoggedModel of the active run."""

    import keras
    import mlflow
    import mlflow.keras

    net = keras.saving.load_model(path, compile=False)
    signature = keras_signature(net)

    def save(local: str, mlflow_model) -> None:
        mlflow.keras.save_model(net, local, mlflow_model=mlflow_model, signature=signature,
                                pip_requirements=requirements(KERAS_REQUIREMENTS))

    return log_logged_model(save, name=name, description=description, params=params,
                            model_type="keras", step=step)


def keras_signature(net):
    """The network's tensors as a signature: each input by name, its unknown sizes (batch,
    a variable-length time axis) as -1; the output the class probabilities."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    def spec(tensor, name=None):
        shape = tuple(-1 if d is None else int(d) for d in tensor.shape)
        return TensorSpec(np.dtype(str(tensor.dtype)), shape, name)

    inputs = list(net.inputs)
    named = len(inputs) > 1
    return ModelSignature(
        inputs=Schema([spec(t, t.name.split(":")[0] if named else None) for t in inputs]),
        outputs=Schema([spec(t) for t in net.outputs]))


def log_sklearn_model(estimator, *, name: str, description: str, params: dict[str, Any],
                      signature=None, step: int = 0):
    """A fitted scikit-learn estimator as a scikit-learn-flavor LoggedModel of the run, in
    skops format (no pickle): the types it holds, all scikit-learn's and numpy's, are named as
    trusted so ``mlflow.sklearn.load_model`` reads it back."""
    import mlflow
    import mlflow.sklearn
    import skops.io

    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(estimator))

    def save(local: str, mlflow_model) -> None:
        mlflow.sklearn.save_model(estimator, local, mlflow_model=mlflow_model,
                                  serialization_format="skops", skops_trusted_types=trusted,
                                  signature=signature,
                                  pip_requirements=requirements(SKLEARN_REQUIREMENTS))

    return log_logged_model(save, name=name, description=description, params=params,
                            model_type="sklearn", step=step)


def log_model_metrics(metrics: dict[str, float], model_id: str, dataset) -> None:
    """Metrics of the active run that score model ``model_id`` on ``dataset`` (they show on
    the run, on the model, and name the dataset)."""

    import warnings

    import mlflow

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MLflow's schema hints (see datasets)
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, model_id=model_id,
                           dataset=dataset)


def log_run_metrics(metrics: dict[str, float], step: int = 0) -> None:
    """Metrics of the active run only (never attached to one of its models)."""
    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    if not metrics:
        return
    run_id = mlflow.active_run().info.run_id
    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    client = MlflowClient()
    for i in range(0, len(batch), 1000):  # MLflow takes at most 1000 metrics per batch
        client.log_batch(run_id, metrics=batch[i : i + 1000])
