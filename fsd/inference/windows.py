"""Long recordings tagged window by window: score each window as a clip, a table of windows, a
whole-file summary (labels found, with their total time) and a timeline plot.

The features come from :func:`fsd.features.windows.window_features` (one streamed decode; no
more memory than the file's log-mel). A window is scored by the ensemble as a clip of its own;
unless the request sets ``tta_lengths``/``tta_crops``, one view of the whole window (its
length in frames, one crop) per fold model. Silent windows are not scored: their labels are
empty and their scores NaN.

A served request (params ``window_seconds``, ``hop_seconds``; its path is
:func:`fsd.serving.requests.score_windowed_request`) is bounded there before anything is decoded:
each recording's header must be readable and declare at most
``ensemble.max_recording_seconds``; the windows it gives, ``windows x (crops x sum(lengths) +
window frames)`` (the views, plus the window's own features), count against
``ensemble.max_request_frames`` with every other recording of the request.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from fsd.features.windows import frames_per_second
from fsd.inference.scoring import response_frame

WINDOW_COLUMNS = ["start", "end"]


def window_views(window: float, cfg, lengths: Sequence[int] | None = None,
                 crops: int = 1) -> tuple[list[int], int]:
    """The views each window gets: ``lengths`` x ``crops`` when given (a request's own TTA),
    else the whole window once."""
    if lengths is not None:
        return list(lengths), int(crops)
    return [max(1, int(round(window * frames_per_second(cfg))))], 1


def score_windows(ensemble, wf, lengths: Sequence[int], crops: int, seed: int) -> np.ndarray:
    """(n_windows, classes) probabilities of ``wf``'s windows; NaN rows for silent ones."""
    probs = np.full((len(wf), len(ensemble.labels)), np.nan, dtype=np.float64)
    mels = wf.window_logmels()
    if mels:
        summaries = wf.summaries if wf.summaries is not None and wf.summaries.size else None
        probs[~wf.silent] = ensemble.predict(mels, summaries, list(lengths), int(crops), seed)
    return probs


def windows_frame(wf, probs: np.ndarray, labels: Sequence[str], top_k: int,
                  return_probabilities: bool = False) -> pd.DataFrame:
    """One row per window: start, end (seconds), label_1, score_1, ..., label_k, score_k;
    a silent window has empty labels and NaN scores."""
    filled = np.where(np.isnan(probs), 0.0, probs)
    table = response_frame(filled, labels, top_k, return_probabilities)
    silent = np.asarray(wf.silent, bool)
    for c in table.columns:
        if c.startswith("label_"):
            table.loc[silent, c] = ""
        else:
            table.loc[silent, c] = np.nan
    table.insert(0, "end", np.round(np.asarray(wf.ends, np.float64), 3))
    table.insert(0, "start", np.round(np.asarray(wf.starts, np.float64), 3))
    return table


def summarise(table: pd.DataFrame, seconds: float, min_score: float = 0.0) -> pd.DataFrame:
    """The whole file at a glance: per label found as a window's top label, its total time,
    the spans it covers and its best score, longest first.

    Each instant belongs to the window whose centre is nearest (windows overlap when the hop
    is shorter than the window), so the times add up to the file's length (silence included,
    as ``(silence)``). A window whose top score is below ``min_score`` counts as
    ``(unsure)``."""
    if table.empty:
        return pd.DataFrame(columns=["label", "seconds", "share", "spans", "best_score"])
    centres = (table["start"].to_numpy(float) + table["end"].to_numpy(float)) / 2
    order = np.argsort(centres, kind="stable")
    centres = centres[order]
    cuts = np.concatenate([[0.0], (centres[1:] + centres[:-1]) / 2, [seconds]])
    labels = table["label_1"].to_numpy(object)[order]
    scores = table["score_1"].to_numpy(float)[order]
    names = [("(silence)" if not lab else "(unsure)" if s < min_score else str(lab))
             for lab, s in zip(labels, scores)]
    stats: dict[str, dict[str, Any]] = {}
    spans: dict[str, list[list[float]]] = {}
    for i, name in enumerate(names):
        a, b = max(cuts[i], 0.0), min(cuts[i + 1], seconds)
        if b <= a:
            continue
        st = stats.setdefault(name, {"seconds": 0.0, "best_score": float("nan")})
        st["seconds"] += b - a
        if not math.isnan(scores[i]):
            st["best_score"] = np.nanmax([st["best_score"], scores[i]])
        sp = spans.setdefault(name, [])
        if sp and abs(sp[-1][1] - a) < 1e-9:
            sp[-1][1] = b
        else:
            sp.append([a, b])
    rows = [{"label": k, "seconds": round(v["seconds"], 3),
             "share": round(v["seconds"] / seconds, 4) if seconds > 0 else 0.0,
             "spans": " ".join(f"{a:.1f}-{b:.1f}" for a, b in spans[k]),
             "best_score": round(float(v["best_score"]), 4)}
            for k, v in stats.items()]
    return pd.DataFrame(rows).sort_values(["seconds", "label"], ascending=[False, True],
                                          kind="stable").reset_index(drop=True)


def format_summary(summary: pd.DataFrame, seconds: float) -> str:
    lines = [f"labels found over {seconds:.1f} s:"]
    for r in summary.itertuples(index=False):
        spans = r.spans if len(r.spans) <= 70 else r.spans[:67] + "..."
        lines.append(f"  {r.label:<24} {r.seconds:8.1f} s  {100 * r.share:5.1f}%  {spans}")
    return "\n".join(lines)


class WindowScorer:
    """A file -> (window table, summary, probabilities, features) over an ensemble-like object
    (``predict``, ``labels``, ``cfg``, ``info``): the registered model's, or an export's."""

    def __init__(self, ensemble):
        self.ensemble = ensemble
        self.labels = list(ensemble.labels)

    def __call__(self, source, window: float, hop: float, top_k: int | None = None):
        from fsd.features.windows import window_features

        cfg = self.ensemble.cfg
        wf = window_features(source, cfg, window, hop)
        lengths, crops = window_views(window, cfg)
        probs = score_windows(self.ensemble, wf, lengths, crops, int(self.ensemble.info.seed))
        table = windows_frame(wf, probs, self.labels, int(top_k or self.ensemble.info.top_k))
        return table, summarise(table, wf.seconds), probs, wf
