"""Small real clips for tests that need files or bytes, and a small labelled folder of them."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf


def write_clip(path: Path, seconds: float = 0.3, freq: float = 440.0, sr: int = 8000) -> Path:
    """A sine of ``freq`` Hz written as a WAV at ``path`` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)
    return path


def wav_bytes(y: np.ndarray, sr: int = 44100, subtype: str = "PCM_16") -> bytes:
    """``y`` as the bytes of a WAV file."""
    buf = io.BytesIO()
    sf.write(buf, np.asarray(y, dtype=np.float32), sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def small_folder(tmp_path: Path):
    """A folder dataset of 2 classes x 3 clips plus one empty file, and its config (2 folds,
    no summary features, the store under tmp_path, not logged to MLflow)."""
    from fsd.config import from_dict

    audio = tmp_path / "audio"
    rows = []
    for label, freq in (("low", 300.0), ("high", 2000.0)):
        for i in range(3):
            write_clip(audio / f"{label}{i}.wav", seconds=0.5, freq=freq * (1 + i / 10))
            rows.append(f"{label}{i}.wav,{label}")
    (audio / "empty.wav").write_bytes(b"")
    rows.append("empty.wav,low")
    csv = tmp_path / "meta.csv"
    csv.write_text("fname,label\n" + "\n".join(rows) + "\n")
    return from_dict({"name": "strict", "output_dir": str(tmp_path / "out"),
                      "data": {"source": "folder", "audio_dir": str(audio), "csv": str(csv)},
                      "folds": {"n_folds": 2},
                      "summary": {"enabled": False},
                      "store": {"cache_dir": str(tmp_path / "cache"), "workers": 1,
                                "log_to_mlflow": False}})
