"""The registered ensemble's model code (MLflow's models from code): MLflow runs this file when
it loads the model, and :func:`mlflow.models.set_model` names the model object. Nothing is
pickled; the bundle (fold networks, scalers, the blended baseline) travels as an artifact and
the package itself as ``code_paths``."""

import mlflow

from fsd.serving.pyfunc import EnsembleModel

mlflow.models.set_model(EnsembleModel())
