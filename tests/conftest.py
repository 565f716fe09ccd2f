"""Shared fixtures: the real clips beside the checkout, and writing audio into tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


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
