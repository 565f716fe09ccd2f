"""A stand-in ensemble that knows each class by the mel band its tone peaks in, and the tone
recordings it is tested on: windowing and the request path are tested, not a network's
quality (tests/unit/inference/test_windows.py, tests/unit/serving/test_inflight.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import soundfile as sf

from fsd.config import from_dict
from fsd.features.logmel import logmel

SR = 44100
TONES = {"low": 220.0, "mid": 1800.0, "high": 7000.0}


def tone(freq: float, seconds: float, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(int(freq))
    return (0.4 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(len(t))) \
        .astype(np.float32)


def config(**extra):
    return from_dict({"summary": {"enabled": False}, "ensemble": {"top_k": 2}, **extra})


class BandEnsemble:
    """A stand-in ensemble that knows each class by the mel band its tone peaks in: the
    windowing is tested, not a network's quality."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.labels = list(TONES)
        self.info = SimpleNamespace(seed=0, top_k=2, max_request_clips=4,
                                    max_clip_bytes=50_000_000, max_request_frames=2_000_000,
                                    tta_lengths=[100], tta_crops=1)
        self.bands = np.array([logmel(tone(f, 1.0), SR, cfg.logmel).mean(0).argmax()
                               for f in TONES.values()])
        self.calls: list[tuple] = []

    def predict(self, logmels, summaries, lengths, crops, seed):
        self.calls.append((len(logmels), tuple(lengths), crops))
        out = []
        for m in logmels:
            d = np.abs(self.bands - np.asarray(m).mean(0).argmax())
            p = np.exp(-d / 2.0)
            out.append(p / p.sum())
        return np.asarray(out, np.float32)


def concatenation(path: Path) -> dict[str, tuple[float, float]]:
    """low 0-3 s, silence 3-4 s, mid 4-7 s, high 7-10 s (a FLAC)."""
    parts = [tone(TONES["low"], 3), np.zeros(SR, np.float32), tone(TONES["mid"], 3),
             tone(TONES["high"], 3)]
    sf.write(path, np.concatenate(parts), SR)
    return {"low": (0, 3), "mid": (4, 7), "high": (7, 10)}
