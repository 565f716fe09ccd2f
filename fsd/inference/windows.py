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
import os
from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class WindowPlan:
    """How a recording of ``seconds`` is tagged: ``n_windows`` windows of ``window`` seconds,
    each seen as ``lengths`` x ``crops``; ``cost`` view frames of work per fold model."""

    window: float
    n_windows: int
    lengths: list[int]
    crops: int
    cost: int


def window_plan(seconds: float, window: float, hop: float, cfg,
                lengths: Sequence[int] | None = None, crops: int = 1,
                whole: tuple[Sequence[int], int] | None = None) -> WindowPlan:
    """The :class:`WindowPlan` of a recording of ``seconds`` (from its header).

    A window at least as long as the recording is the recording: one window, seen as the
    whole clip is (``whole``: the model's own TTA lengths and crops) unless ``lengths`` are
    given, so it gets the whole file's answer; never a view padded to the asked window
    (which changed the answer and cost memory in proportion to the window)."""
    from fsd.features.windows import count_windows

    eff = min(float(window), float(seconds)) if seconds > 0 else float(window)
    if lengths is None and whole is not None and seconds <= window:
        views, n_crops = [int(v) for v in whole[0]], int(whole[1])
    else:
        views, n_crops = window_views(eff, cfg, lengths, crops)
    n = count_windows(seconds, window, hop)
    per = n_crops * int(sum(views)) + int(round(eff * frames_per_second(cfg)))
    return WindowPlan(eff, n, views, n_crops, n * per)


# Windows scored per ensemble call: between calls a cancelled request stops and progress moves.
WINDOW_BATCH = 32


def score_windows(ensemble, wf, lengths: Sequence[int], crops: int, seed: int, *,
                  cancel=None, progress=None) -> np.ndarray:
    """(n_windows, classes) probabilities of ``wf``'s windows; NaN rows for silent ones.

    Scored :data:`WINDOW_BATCH` windows at a time (a window's answer does not depend on its
    batch); ``cancel`` (anything with ``is_set()``, e.g. a threading.Event) is checked before
    each batch and raises :class:`fsd.inference.inflight.Cancelled` (default: the served
    request's flag, :data:`fsd.inference.inflight.CANCEL`); ``progress`` (a tqdm-like bar) is
    advanced by the windows done."""
    from fsd.inference.inflight import CANCEL, check_cancel

    cancel = cancel if cancel is not None else CANCEL.get()
    probs = np.full((len(wf), len(ensemble.labels)), np.nan, dtype=np.float64)
    mels = wf.window_logmels()
    summaries = wf.summaries if wf.summaries is not None and wf.summaries.size else None
    rows = np.flatnonzero(~np.asarray(wf.silent, bool))
    if progress is not None:
        progress.update(len(wf) - len(rows))  # silent windows: nothing to score
    for a in range(0, len(mels), WINDOW_BATCH):
        check_cancel(cancel)
        b = min(a + WINDOW_BATCH, len(mels))
        probs[rows[a:b]] = ensemble.predict(mels[a:b], None if summaries is None
                                            else summaries[a:b], list(lengths), int(crops),
                                            seed)
        if progress is not None:
            progress.update(b - a)
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


class WindowLimit(ValueError):
    """A local windowed run refused before decoding: the window, the hop or the work is out of
    bounds (the served request's bounds; the message is one line)."""


class WindowScorer:
    """A file -> (window table, summary, probabilities, features) over an ensemble-like object
    (``predict``, ``labels``, ``cfg``, ``info``): the registered model's, or an export's.

    Held to the served request's bounds (:func:`check_window`): the window at most
    ``ensemble.max_recording_seconds``, the windows' work (:func:`window_plan`) at most the
    bundle's ``max_request_frames`` per file, checked on the file's header before decoding."""

    def __init__(self, ensemble):
        self.ensemble = ensemble
        self.labels = list(ensemble.labels)

    def plan(self, source, window: float, hop: float) -> WindowPlan:
        """The file's plan, or a WindowLimit naming the bound it breaks."""
        import soundfile as sf

        from fsd.data.audio import AudioError, open_checked
        from fsd.inference.scoring import cost_limit

        cfg = self.ensemble.cfg
        check_window(window, hop, float(cfg.ensemble.max_recording_seconds))
        try:
            with open_checked(os.path.realpath(source)) as fh:
                header = sf.info(fh)
            seconds = int(header.frames) / int(header.samplerate)
        except AudioError:
            raise
        except Exception:
            raise AudioError("not usable audio: its header cannot be read") from None
        info = self.ensemble.info
        plan = window_plan(seconds, window, hop, cfg,
                           whole=(list(info.tta_lengths), int(info.tta_crops)))
        limit = cost_limit(self.ensemble.info)
        if plan.cost > limit:
            raise WindowLimit(
                f"{plan.n_windows:,} windows of {plan.window:g} s every {hop:g} s = "
                f"{plan.cost:,} view frames > {limit:,} (the model's max_request_frames): "
                "use a longer --hop or a shorter --window")
        return plan

    def __call__(self, source, window: float, hop: float, top_k: int | None = None,
                 progress: bool = False):
        from fsd import progress as bars
        from fsd.features.windows import window_features

        cfg = self.ensemble.cfg
        plan = self.plan(source, window, hop)
        wf = window_features(source, cfg, window, hop,
                             max_seconds=None)  # the header's length was planned above
        bar = bars.bar(total=len(wf), enabled=progress, unit="window", leave=False,
                       desc=str(getattr(source, "name", source))[-40:])
        try:
            probs = score_windows(self.ensemble, wf, plan.lengths, plan.crops,
                                  int(self.ensemble.info.seed), progress=bar)
        finally:
            bar.close()
        table = windows_frame(wf, probs, self.labels, int(top_k or self.ensemble.info.top_k))
        return table, summarise(table, wf.seconds), probs, wf


# The served bounds on a window (fsd.serving.requests checks a request's params against them)
MIN_WINDOW_SECONDS = 0.25
MIN_HOP_SECONDS = 0.05


def check_window(window: Any, hop: Any, max_seconds: float) -> None:
    """A finite window in [MIN_WINDOW_SECONDS, ``max_seconds``] and a finite hop in
    [MIN_HOP_SECONDS, window]; else a WindowLimit (1e9, inf, nan, 0 and negatives included)."""
    for name, v in (("--window", window), ("--hop", hop)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise WindowLimit(f"{name} must be a finite number of seconds")
    if not MIN_WINDOW_SECONDS <= window <= max_seconds:
        raise WindowLimit(f"--window must be between {MIN_WINDOW_SECONDS:g} and {max_seconds:g} "
                          "s (ensemble.max_recording_seconds)")
    if not MIN_HOP_SECONDS <= hop <= window:
        raise WindowLimit(f"--hop must be between {MIN_HOP_SECONDS:g} s and the window")
