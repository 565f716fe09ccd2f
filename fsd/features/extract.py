"""The one path from raw audio to features, shared by featurize and serving."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fsd.config import Config
from fsd.data.audio import load_audio
from fsd.features.logmel import logmel


@dataclass
class ClipFeatures:
    """Features of one clip: ``logmel`` (frames, n_mels) float32, ``summary`` (1133,) float32
    (empty when ``summary.enabled`` is false) and ``seconds`` of trimmed audio."""

    logmel: np.ndarray
    summary: np.ndarray
    seconds: float


def features_from_waveform(y: np.ndarray, sr: int, cfg: Config) -> ClipFeatures:
    """Features of an already loaded (decoded, resampled, trimmed) waveform."""
    mel = logmel(y, sr, cfg.logmel, cfg.audio.resample_type)
    if cfg.summary.enabled:
        # imported here: a log-mel-only model (a distilled student) never loads the summary
        # feature code on its request path
        from fsd.features.summary import summary_features

        summ = summary_features(y, sr, cfg.summary)
    else:
        summ = np.zeros(0, dtype=np.float32)
    return ClipFeatures(logmel=mel, summary=summ, seconds=len(y) / sr)


def extract_clip(source: str | Path | bytes, cfg: Config) -> ClipFeatures:
    """Decode ``source`` (path or bytes) as the recipe's loader does and compute its features.

    Raises :class:`fsd.data.audio.AudioError` for unusable audio.
    """
    y = load_audio(source, cfg.audio)
    return features_from_waveform(y, cfg.audio.sample_rate, cfg)
