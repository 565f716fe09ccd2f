"""The ensemble as an MLflow pyfunc that takes raw audio, and its registration with an alias.

Input: a DataFrame with one column ``audio`` of file bytes (base64 strings in a JSON request,
decoded here: the signature declares the column ``Any`` so that a bad string gets our message,
not MLflow's) in any format libsndfile reads. Output per clip: ``label_1, score_1, ...,
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
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.tracking import MlflowClient

import fsd
from fsd.serving.requests import AUDIO_COLUMN, RequestError, response_frame, score_request

log = logging.getLogger(__name__)

BUNDLE_ARTIFACT = "bundle"
SCORE_TAG = "fsd.oof_map3"
TRAIN_KEY_TAG = "fsd.train_key"  # = fsd.tracking.TAG_TRAIN_KEY (pyfunc code stays light)

# The packages the model imports at load and predict time; versions are the installed ones.
_REQUIREMENTS = ("mlflow", "tensorflow", "tensorflow-cpu", "keras", "librosa", "soundfile",
                 "soxr", "numba", "numpy", "pandas", "scikit-learn", "scipy", "joblib", "pyyaml")


class EnsembleModel(mlflow.pyfunc.PythonModel):
    """Raw audio in, top-k labels out; all folds x TTA lengths x crops, geometric mean."""

    def load_context(self, context) -> None:
        from fsd.ensemble.bundle import Ensemble

        self._ensemble = Ensemble.load(context.artifacts[BUNDLE_ARTIFACT])
        # The scoring server calls predict from worker threads; TF already uses every core
        # for one forward pass, so passes are serialised while decoding stays concurrent.
        self._lock = threading.Lock()

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None):
        try:
            return score_request(_Locked(self._ensemble, self._lock), model_input, params)
        except RequestError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None


class _Locked:
    """The ensemble with its forward passes behind a lock (see load_context)."""

    def __init__(self, ensemble, lock: threading.Lock):
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
            "top_k": int(info.top_k), "seed": int(info.seed), "return_probabilities": False}


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
                       sample_rate: int = 44100) -> mlflow.models.model.ModelInfo:
    """Log the bundle as a pyfunc in the active run; returns the ModelInfo (``model_uri``).

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
        python_model=EnsembleModel(),
        artifacts={BUNDLE_ARTIFACT: str(bundle_dir)},
        signature=signature,
        input_example=example,
        code_paths=[str(Path(fsd.__file__).resolve().parent)],
        pip_requirements=pip_requirements(),
    )


@dataclass
class Promotion:
    """The outcome of registering a model version and comparing it with the alias holder."""

    name: str
    alias: str
    version: str
    score: float
    previous_version: str | None
    previous_score: float | None
    moved: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def holder_score(client: MlflowClient, mv) -> float | None:
    """A version's recorded out-of-fold MAP@3: its tag, else its run's ``oof_map3`` metric."""
    tag = (mv.tags or {}).get(SCORE_TAG)
    if tag not in (None, ""):
        try:
            return float(tag)
        except ValueError:
            pass
    if mv.run_id:
        try:
            value = client.get_run(mv.run_id).data.metrics.get("oof_map3")
        except MlflowException:
            value = None
        if value is not None:
            return float(value)
    return None


def register_and_promote(model_uri: str, name: str, alias: str, score: float,
                         run_id: str | None = None, train_key: str = "") -> Promotion:
    """Register ``model_uri`` as a new version of ``name``; move ``alias`` to it only when
    ``score`` beats the current holder's (strictly). A holder without a recorded score loses.

    Reading the holder, comparing and moving the alias happen under ``alias_lock`` (a lock in
    the registry itself), so two ensembles finishing together cannot both read the old holder
    and leave the alias on the worse of them."""
    client = MlflowClient()
    mv = mlflow.register_model(model_uri, name, tags={SCORE_TAG: f"{score:.6f}",
                                                      TRAIN_KEY_TAG: train_key})
    version = str(mv.version)
    with alias_lock(client, name, alias):
        held = client.get_registered_model(name).aliases or {}
        holder = client.get_model_version(name, str(held[alias])) if alias in held else None
        prev_version = str(holder.version) if holder is not None else None
        prev_score = holder_score(client, holder) if holder is not None else None
        if holder is None:
            moved, reason = True, f"no version held @{alias}"
        elif prev_version == version:
            moved, reason = False, "already the holder"
        elif prev_score is None:
            moved, reason = True, f"v{prev_version} has no recorded oof_map3"
        elif score > prev_score:
            moved, reason = True, f"oof_map3 {score:.4f} > {prev_score:.4f} of v{prev_version}"
        else:
            moved, reason = False, f"oof_map3 {score:.4f} <= {prev_score:.4f} of v{prev_version}"
        if moved:
            client.set_registered_model_alias(name, alias, version)
            # re-check after the set: the alias must now name this version
            now = str((client.get_registered_model(name).aliases or {}).get(alias, ""))
            if now != version:
                raise MlflowException(f"@{alias} of {name} names v{now or '-'} right after it was "
                                      f"moved to v{version}: the alias lock was not respected")
        client.set_model_version_tag(name, version, "fsd.promotion",
                                     f"{'moved' if moved else 'kept'} @{alias}: {reason}")
    log.info("%s v%s: %s @%s (%s)", name, version, "took" if moved else "did not take", alias,
             reason)
    return Promotion(name=name, alias=alias, version=version, score=float(score),
                     previous_version=prev_version, previous_score=prev_score, moved=moved,
                     reason=reason)


LOCK_OWNER_TAG = "fsd.lock_owner"
LOCK_STALE_S = 600.0


def lock_model_name(name: str, alias: str) -> str:
    return f"{name}.lock.{alias}"


@contextmanager
def alias_lock(client: MlflowClient, name: str, alias: str, timeout: float = 600.0,
               stale_s: float = LOCK_STALE_S):
    """A mutex in the model registry: creating a registered model is atomic (its name is the
    store's primary key; a second create fails with RESOURCE_ALREADY_EXISTS), on every
    database-backed tracking server, so the lock holds across processes and machines that
    share one. Released by deleting it. A lock left by a killed holder is broken when its
    process is gone (same host) or when it is older than ``stale_s`` (the critical section
    takes seconds)."""
    import os
    import random
    import socket
    import time

    from fsd.tracking import process_alive  # here: serving the model does not need tracking

    lock = lock_model_name(name, alias)
    owner = f"{socket.gethostname()}:{os.getpid()}"
    deadline = time.monotonic() + timeout
    waited = False
    while True:
        try:
            client.create_registered_model(
                lock, tags={LOCK_OWNER_TAG: owner},
                description=f"A lock, held while an ensemble moves @{alias} of `{name}`; "
                            "deleted when done.")
            break
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        try:
            held = client.get_registered_model(lock)
        except MlflowException:
            continue  # released in between: try again at once
        held_by = (held.tags or {}).get(LOCK_OWNER_TAG, "")
        age = time.time() - (held.creation_timestamp or 0) / 1000
        host, _, pid = held_by.rpartition(":")
        dead = host == socket.gethostname() and pid.isdigit() and not process_alive(int(pid))
        if dead or age > stale_s:
            log.warning("breaking the lock %s of %s (%s)", lock, held_by or "?",
                        "its process is gone" if dead else f"{age:.0f} s old")
            _delete_model(client, lock)
            continue
        if time.monotonic() > deadline:
            raise TimeoutError(f"@{alias} of {name} stayed locked by {held_by or '?'} for "
                               f"{timeout:.0f} s (registered model {lock})")
        if not waited:
            log.info("@%s of %s is being moved by %s; waiting", alias, name, held_by or "?")
            waited = True
        time.sleep(0.1 + random.random() * 0.3)
    try:
        yield lock
    finally:
        _delete_model(client, lock)


def _delete_model(client: MlflowClient, name: str) -> None:
    try:
        client.delete_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise


class LocalServer:
    """``mlflow models serve -m URI --env-manager local`` on 127.0.0.1, as a context manager;
    with ``front=True`` ``fsd serve --model URI`` instead (``serve_args`` appended).

    Waits for ``/ping`` (bounded by ``start_timeout``) and always stops the whole process group
    on exit, so a failing test or benchmark never leaves a server behind.
    """

    def __init__(self, model_uri: str, *, port: int = 0, env: dict[str, str] | None = None,
                 start_timeout: float = 180.0, request_timeout: int = 60, log_path: Path | None = None,
                 front: bool = False, serve_args: list[str] | None = None):
        self.front = front
        self.serve_args = list(serve_args or [])
        self.model_uri = model_uri
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.start_timeout = start_timeout
        self.request_timeout = request_timeout
        self.log_path = log_path
        self._proc = None
        self._log = None
        self._own_log = False

    def __enter__(self) -> LocalServer:
        import os
        import subprocess
        import sys
        import tempfile

        env = dict(os.environ if self.env is None else self.env)
        # MLflow launches `uvicorn` by name: the interpreter's bin folder must be on PATH
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
        env["MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"] = str(self.request_timeout)
        if self.log_path is None:
            self._log = tempfile.NamedTemporaryFile("w+b", prefix="fsd-serve-", suffix=".log",
                                                    delete=False)
            self.log_path = Path(self._log.name)
            self._own_log = True
        else:
            self._log = open(self.log_path, "w+b")
        if self.front:
            cmd = [sys.executable, "-m", "fsd", "serve", "--model", self.model_uri,
                   "--host", "127.0.0.1", "--port", str(self.port),
                   "--timeout", str(self.request_timeout), *self.serve_args]
        else:
            cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", self.model_uri,
                   "--env-manager", "local", "-h", "127.0.0.1", "-p", str(self.port)]
        self._proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        import time
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"the model server exited with {self._proc.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"the model server did not answer /ping within {self.start_timeout:.0f} s:"
                           f"\n{self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        try:
            return Path(self.log_path).read_bytes()[-n:].decode(errors="replace")
        except (OSError, TypeError):
            return ""

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def stop(self) -> None:
        import os
        import signal
        import subprocess

        if self._proc is not None and self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGTERM)
                self._proc.wait(timeout=20)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._own_log:  # a temp log of ours; errors already carried its tail
            Path(self.log_path).unlink(missing_ok=True)
            self._own_log = False

    def __exit__(self, *exc) -> None:
        self.stop()

    def invoke(self, payload: dict | bytes | str, timeout: float = 120.0,
               content_type: str = "application/json") -> tuple[int, Any]:
        """POST /invocations; returns (status, parsed JSON or text). Never raises for 4xx/5xx."""
        import json
        import urllib.error
        import urllib.request

        body = payload if isinstance(payload, bytes) else (
            payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
        req = urllib.request.Request(f"{self.url}/invocations", data=body, method="POST",
                                     headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as err:
            status, text = err.code, err.read().decode(errors="replace")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def audio_request(blobs: list[bytes], params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON body for /invocations: base64 clips in ``dataframe_split``, optional params."""
    import base64

    body: dict[str, Any] = {"dataframe_split": {
        "columns": [AUDIO_COLUMN], "data": [[base64.b64encode(b).decode()] for b in blobs]}}
    if params:
        body["params"] = params
    return body
