"""The ensemble as an MLflow pyfunc that takes raw audio (its registration: :mod:`fsd.serving.registry`;
the request checks and scoring: :mod:`fsd.serving.requests`).

Logged from code (:mod:`fsd.serving.ensemble_model` calls ``mlflow.models.set_model``), so
nothing is pickled: the model is this class, rebuilt from the package's code at load time.

Input: a DataFrame with one column ``audio`` of file bytes (base64 strings in a JSON request,
decoded here) in any format libsndfile reads. The signature declares the column ``Any``, not
``binary`` or ``string``: MLflow enforces a declared type before the model sees the request
and answers a bad value itself (``binary``: the scoring server's base64 decoding says
"Incorrect padding"; ``string`` or ``binary``: a number gets "Failed to enforce schema of
data ...", checked with MLflow 3.17), and a pyfunc cannot replace that message. With ``Any``
every value reaches the request checks (:mod:`fsd.serving.requests`), which say what is
wrong (not base64, empty, too large, not a string) and in which row. Output per clip: ``label_1, score_1, ...,
label_k, score_k`` (optionally ``prob_<label>`` for every class). Inference settings arrive as
MLflow ``params`` (``tta_lengths``, ``tta_crops``, ``top_k``, ``seed``,
``return_probabilities``), declared in the signature with the ensemble's defaults.

A malformed request raises ``MlflowException(..., INVALID_PARAMETER_VALUE)``, which the scoring
server answers with HTTP 400 and the message; the model's code travels with it
(``code_paths``), so it loads where ``fsd`` is not installed.
"""

from __future__ import annotations

import io
import logging
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE

import fsd
from fsd.inference.inflight import Busy, TurnLock
from fsd.inference.scoring import response_frame
from fsd.serving.requests import AUDIO_COLUMN, RequestError, score_request

log = logging.getLogger(__name__)

BUNDLE_ARTIFACT = "bundle"
MODEL_CODE = Path(__file__).resolve().parent / "ensemble_model.py"  # models from code

# The packages the model imports at load and predict time; versions are the installed ones.
_REQUIREMENTS = ("mlflow", "tensorflow", "tensorflow-cpu", "keras", "librosa", "soundfile",
                 "soxr", "numba", "numpy", "pandas", "scikit-learn", "scipy", "joblib", "pyyaml")


class EnsembleModel(mlflow.pyfunc.PythonModel):
    """Raw audio in, top-k labels out; all folds x TTA lengths x crops, geometric mean."""

    def load_context(self, context) -> None:
        from fsd.ensemble.bundle import Ensemble

        self._ensemble = Ensemble.load(context.artifacts[BUNDLE_ARTIFACT])
        # The scoring server calls predict from worker threads; TF already uses every core
        # for one forward pass, so passes are serialised (in arrival order: a long windowed
        # request cannot starve short ones between its batches) while decoding stays concurrent.
        self._lock = TurnLock()

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None):
        try:
            return score_request(_Locked(self._ensemble, self._lock), model_input, params)
        except RequestError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        except Busy as exc:  # the work in flight is at its ceiling: 503, retry shortly
            raise MlflowException(str(exc), error_code=TEMPORARILY_UNAVAILABLE) from None


class _Locked:
    """The ensemble with its forward passes behind a lock (see load_context)."""

    def __init__(self, ensemble, lock: TurnLock):
        self._e, self._lock = ensemble, lock
        self.info, self.labels, self.cfg = ensemble.info, ensemble.labels, ensemble.cfg

    def predict(self, *args, **kwargs) -> np.ndarray:
        with self._lock:
            return self._e.predict(*args, **kwargs)


def example_wav(seconds: float = 1.0, sr: int = 44100, seed: int = 0) -> bytes:
    """A small deterministic WAV (a decaying chirp over noise) for input examples and probes."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = 0.4 * np.sin(2 * np.pi * (300 + 900 * t) * t) * np.exp(-1.5 * t)
    y += 0.05 * rng.standard_normal(len(t))
    buf = io.BytesIO()
    sf.write(buf, y.astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def default_params(info) -> dict[str, Any]:
    """The params the signature declares, with the bundle's defaults."""
    return {"tta_lengths": [int(v) for v in info.tta_lengths], "tta_crops": int(info.tta_crops),
            "top_k": int(info.top_k), "seed": int(info.seed), "return_probabilities": False,
            # long recordings window by window (fsd.inference.windows); 0: one answer per clip
            "window_seconds": 0.0, "hop_seconds": 0.0}


def pip_requirements() -> list[str]:
    """Installed versions of what the model needs (no inference pass over a loaded model)."""
    reqs = []
    for name in _REQUIREMENTS:
        try:
            reqs.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return reqs


def log_ensemble_model(bundle_dir: Path, info, name: str = "model",
                       sample_rate: int = 44100, model_id: str | None = None,
                       ) -> mlflow.models.model.ModelInfo:
    """Log the bundle as a pyfunc (from code) in the active run; returns the ModelInfo
    (``model_uri``). ``model_id``: a LoggedModel created beforehand
    (``mlflow.initialize_logged_model``) with its own params and description.

    The input example (one short WAV) is stored with the model so `mlflow models serve` users
    see a valid request; MLflow 3 only warns when the model cannot answer it.
    """
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    example = pd.DataFrame({AUDIO_COLUMN: [example_wav(sr=sample_rate)]})
    n = len(info.labels)
    out_example = response_frame(np.full((1, n), 1.0 / n), info.labels, info.top_k)
    inferred = infer_signature(example, out_example, params=default_params(info))
    # `audio` is declared Any, not binary: MLflow's own base64 decoding of a binary column
    # answers junk with "Incorrect padding"; taking the strings as sent lets the request checks
    # say what is wrong (not base64, empty, too large) and which row.
    signature = ModelSignature(inputs=Schema([ColSpec(AnyType(), AUDIO_COLUMN)]),
                               outputs=inferred.outputs, params=inferred.params)
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(MODEL_CODE),  # models from code: no pickle
        artifacts={BUNDLE_ARTIFACT: str(bundle_dir)},
        signature=signature,
        input_example=example,
        code_paths=[str(Path(fsd.__file__).resolve().parent)],
        pip_requirements=pip_requirements(),
        model_id=model_id,
    )


def ensemble_of(model) -> Any:
    """The :class:`fsd.ensemble.bundle.Ensemble` inside a loaded pyfunc (for local windows
    over files of any length, which a served request cannot carry)."""
    python_model = model.unwrap_python_model() if hasattr(model, "unwrap_python_model") else model
    for name in ("ensemble", "_ensemble"):
        found = getattr(python_model, name, None)
        if found is not None and hasattr(found, "predict"):
            return found
    raise TypeError("this model is not an fsd ensemble (no ensemble inside it)")
