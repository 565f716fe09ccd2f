"""Clips scored by an ensemble-like model into a table: per clip its top-k labels and scores.

The model is a :class:`fsd.ensemble.bundle.Ensemble` (the registered model's) or a
:class:`fsd.export.predictor.ExportedModel`: anything with ``labels``, ``cfg``, ``info`` and
``predict(logmels, summaries, lengths, crops, seed)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fsd.inference.clips import ClipError, clip_features, stack_summaries

# The work of one request, bounded as a whole: view frames per fold model, clips x crops x the
# sum of the lengths (each view is one crop of one clip at one length). Each bound above alone
# let 4 clips x 16 lengths of 4000 x 32 crops (8.2M frames, minutes of CPU) through. The
# default admits ensemble.max_request_clips clips at the recipe's defaults (64 x 5 crops x six
# lengths summing ~3,100 frames = ~1M); a bundle's own defaults are always admitted. Local
# windowed prediction (`fsd predict --window`) is held to the same bound per file.
MAX_REQUEST_FRAMES = 2_000_000


def request_cost(n_clips: int, lengths: Sequence[int], crops: int) -> int:
    """View frames one fold model computes for a request: clips x crops x sum of lengths."""
    return int(n_clips) * int(crops) * int(sum(int(v) for v in lengths))


def cost_limit(info) -> int:
    """The bundle's bound on :func:`request_cost`: ``max_request_frames`` (the module default
    when unset), never below what its own defaults need at ``max_request_clips`` clips."""
    limit = int(getattr(info, "max_request_frames", 0) or MAX_REQUEST_FRAMES)
    own = request_cost(info.max_request_clips, info.tta_lengths, info.tta_crops)
    return max(limit, own)


def response_frame(probs: np.ndarray, labels: Sequence[str], top_k: int,
                   return_probabilities: bool = False) -> pd.DataFrame:
    """Per clip the ``top_k`` labels and scores, best first: label_1, score_1, ..., label_k,
    score_k; with ``return_probabilities`` one ``prob_<label>`` column per class as well."""
    probs = np.asarray(probs, dtype=np.float64)
    k = min(top_k, probs.shape[1])
    # argsort of -p is stable, so ties keep label order and answers are reproducible
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    names = np.asarray(labels, dtype=object)
    cols: dict[str, Any] = {}
    for j in range(k):
        cols[f"label_{j + 1}"] = names[order[:, j]].tolist()
        cols[f"score_{j + 1}"] = np.take_along_axis(probs, order[:, j:j + 1], axis=1)[:, 0]
    if return_probabilities:
        for c, name in enumerate(labels):
            cols[f"prob_{name}"] = probs[:, c]
    return pd.DataFrame(cols)


def score_files(model, files: Sequence[str | Path], top_k: int) -> list[dict[str, Any]]:
    """One row per file: fname, label_1, score_1, ..., label_k, score_k, or ``error`` (why the
    file could not be scored); the usable files are scored together."""
    rows: list[dict[str, Any]] = []
    logmels, summaries, where = [], [], []
    for f in files:
        rows.append({"fname": Path(f).name})
        try:
            logmel, summary = clip_features(Path(f).read_bytes(), model.cfg)
        except ClipError as exc:
            rows[-1]["error"] = str(exc)
            continue
        except OSError as exc:
            rows[-1]["error"] = exc.strerror or str(exc)
            continue
        logmels.append(logmel)
        summaries.append(summary)
        where.append(len(rows) - 1)
    if logmels:
        probs = model.predict(logmels, stack_summaries(summaries))
        for i, rec in zip(where, response_frame(probs, model.labels, top_k).to_dict("records")):
            rows[i].update(rec)
    return rows
