"""Shared fixtures: the real clips beside the checkout, and writing audio into tmp_path.

The tests come in two tiers: ``tests/unit/<package>/`` mirrors ``fsd/`` (fast; nothing trains,
serves or starts a service: ``make test-fast``), ``tests/e2e/`` holds what trains, serves or
starts services, every module there marked ``e2e`` (its trained session fixtures live in
``tests/e2e/conftest.py``, out of the unit tier's reach). ``tests/support/`` holds the
harnesses both tiers and the benchmarks import (on ``sys.path`` from here); collection fails
when an e2e test is unmarked or a unit test carries ``e2e``, ``slow`` or ``distributed``.

The tests leave nothing in the checkout: the session points MLflow at a tracking store and an
artifact root in a temporary folder (a sqlite store created without an artifact root would
put its artifacts under ``./mlruns`` of the working directory, the checkout), and at its end
fails when a file or folder appeared in the checkout that git does not track
(``pytest_sessionfinish``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
# the harnesses (tests/support/) import as top-level modules from either tier
sys.path.insert(0, str(TESTS / "support"))
SHARED_DATA = REPO.parent / "shared" / "data"
# What a test run may leave in the checkout (caches of Python and pytest, the venv).
_ALLOWED = ("__pycache__", ".pytest_cache", ".venv", ".egg-info", ".hypothesis", ".ruff_cache")
# MLflow's artifact root for stores created without one (read by mlflow.tracking's
# _get_sqlalchemy_store; otherwise ./mlruns of the working directory)
_ARTIFACT_ROOT_VAR = "_MLFLOW_SERVER_ARTIFACT_ROOT"
_SESSION: dict[str, object] = {}


def _untracked_in_checkout() -> set[str] | None:
    """Paths in the checkout git does not track (ignored ones too), minus caches; None when
    the checkout is not a git work tree."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode:
        return None
    paths = {line[3:] for line in out.stdout.splitlines() if line[:2] in ("??", "!!")}
    return {p for p in paths if not any(a in p for a in _ALLOWED)}


def pytest_sessionstart(session) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="fsd-tests-"))
    _SESSION["tmp"] = tmp
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tmp}/mlflow.db")
    os.environ.setdefault(_ARTIFACT_ROOT_VAR, str(tmp / "mlartifacts"))
    os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
    _SESSION["before"] = _untracked_in_checkout()


def pytest_collection_modifyitems(config, items) -> None:
    """Each test sits in the tier its markers say: e2e ones under tests/e2e/, marked ``e2e``;
    nothing under tests/unit/ marked e2e, slow or distributed."""
    wrong = []
    for item in items:
        where = Path(str(item.fspath)).resolve().relative_to(TESTS).parts[0]
        marks = {m.name for m in item.iter_markers()}
        if where == "e2e" and "e2e" not in marks:
            wrong.append(f"{item.nodeid}: under tests/e2e/ without the e2e marker")
        elif where == "unit" and marks & {"e2e", "slow", "distributed"}:
            wrong.append(f"{item.nodeid}: in the unit tier but marked "
                         f"{', '.join(sorted(marks & {'e2e', 'slow', 'distributed'}))}")
        elif where not in ("e2e", "unit"):
            wrong.append(f"{item.nodeid}: outside tests/unit/ and tests/e2e/")
    if wrong:
        raise pytest.UsageError("tests in the wrong tier:\n  " + "\n  ".join(wrong[:20]))


def pytest_sessionfinish(session, exitstatus) -> None:
    before, after = _SESSION.get("before"), _untracked_in_checkout()
    tmp = _SESSION.get("tmp")
    if isinstance(tmp, Path):
        shutil.rmtree(tmp, ignore_errors=True)
    if before is None or after is None:
        return
    left = sorted(after - before)
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = ("the tests left files in the checkout (they must write under tmp): "
                   + ", ".join(left[:20]))
        if reporter is not None:
            reporter.write_line(message, red=True)
        session.exitstatus = 1


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout (real recordings); skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent: real-clip tests need the shared data beside the checkout")
    return SHARED_DATA


def make_tone(seconds: float, sr: int = 44100, freq: float = 440.0, amp: float = 0.5,
              channels: int = 1) -> np.ndarray:
    """A sine as float32, shape (n,) or (n, channels) (channel c scaled by 1/(c+1))."""
    t = np.arange(int(round(seconds * sr))) / sr
    y = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    if channels == 1:
        return y
    return np.stack([y / (c + 1) for c in range(channels)], axis=1)


@pytest.fixture
def tone() -> Callable[..., np.ndarray]:
    """``tone(seconds, sr=44100, freq=440, amp=0.5, channels=1)`` -> a float32 sine."""
    return make_tone


@pytest.fixture
def write_audio(tmp_path: Path) -> Callable[..., Path]:
    """``write_audio(name, y, sr=44100, subtype=None)`` -> the path of a real file in tmp_path.

    The format follows the name's extension (wav, flac, ogg); ``subtype`` picks the encoding
    (PCM_16 by default for WAV, e.g. PCM_U8, PCM_24, PCM_32, FLOAT).
    """

    def write(name: str, y: np.ndarray, sr: int = 44100, subtype: str | None = None) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, y, sr, subtype=subtype)
        return path

    return write


@pytest.fixture(autouse=True)
def _isolated_mlflow_environment():
    """mlflow.set_experiment writes MLFLOW_EXPERIMENT_ID into os.environ; keep each test's
    MLflow settings (env vars, active runs) from leaking into the next one's subprocesses."""
    import os

    before = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    yield
    import mlflow

    while mlflow.active_run():
        mlflow.end_run()
    for k in [k for k in os.environ if k.startswith("MLFLOW_")]:
        if k not in before:
            del os.environ[k]
    os.environ.update(before)
