"""A clip's bytes -> the features the networks and baselines take, as training computed them
(:func:`fsd.features.extract.extract_clip`)."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import numpy as np

# Clips decoded at once across all threads (each holds up to ~100 MB of float32 samples while
# it decodes; the scoring server decodes in worker threads); FSD_DECODE_SLOTS overrides it.
DECODE_SLOTS = threading.BoundedSemaphore(max(1, int(os.environ.get("FSD_DECODE_SLOTS", "2"))))
# Long recordings decoded window by window at once (FSD_WINDOW_DECODE_SLOTS overrides it): a
# pool of their own, since one holds its slot for its whole streamed decode (a minute for ten
# minutes of audio): in the clips' pool it left 5 s clips waiting for it (p95 59 s under the
# three-request attack of issue 25; 2.1 s, 1.7x idle, with pools apart).
WINDOW_DECODE_SLOTS = threading.BoundedSemaphore(
    max(1, int(os.environ.get("FSD_WINDOW_DECODE_SLOTS", "1"))))


class ClipError(ValueError):
    """A clip that cannot be scored. ``reason`` says why without quoting the clip; ``row`` is
    its position among the clips scored together (None for a single clip)."""

    def __init__(self, reason: str, row: int | None = None):
        self.reason, self.row = reason, row
        super().__init__(reason if row is None else f"row {row}: {reason}")


def clip_features(blob: bytes, cfg) -> tuple[np.ndarray, np.ndarray | None]:
    """One clip's (log-mel, summary) as float32; the summary is None when ``summary.enabled``
    is off. Raises ClipError for a clip that is not usable audio or gives no log-mel frame."""
    from fsd.data.audio import AudioError
    from fsd.features.extract import extract_clip
    from fsd.inference.inflight import slot

    try:
        with slot(DECODE_SLOTS):  # a given-up request stops waiting for one
            feats = extract_clip(bytes(blob), cfg)
    except AudioError as exc:
        raise ClipError(f"not usable audio: {exc}") from None
    except ValueError:  # feature code refusing a degenerate clip (e.g. no frames)
        raise ClipError("cannot compute features of this clip") from None
    if feats.logmel is None or len(feats.logmel) == 0:
        raise ClipError("too short to compute a log-mel frame")
    summary = None
    if feats.summary is not None and np.size(feats.summary):  # empty: summary disabled
        summary = np.asarray(feats.summary, dtype=np.float32)
    return np.asarray(feats.logmel, dtype=np.float32), summary


def stack_summaries(summaries: Sequence[np.ndarray | None]) -> np.ndarray | None:
    """The clips' summaries as one (n, features) array; None when any clip has none."""
    if not summaries or any(s is None for s in summaries):
        return None
    return np.stack(summaries)


def clips_features(blobs: Sequence[bytes], cfg) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Every clip's features (:func:`clip_features`); the first clip that cannot be scored is
    a ClipError naming its row."""
    logmels, summaries = [], []
    for i, blob in enumerate(blobs):
        try:
            logmel, summary = clip_features(blob, cfg)
        except ClipError as exc:
            raise ClipError(exc.reason, row=i) from None
        logmels.append(logmel)
        summaries.append(summary)
    return logmels, stack_summaries(summaries)
