"""What a scoring request may contain, checked before any audio is decoded; then the request
is scored by the one scoring path, :mod:`fsd.inference` (decode, features, TTA, windows).

Everything here raises :class:`RequestError`, whose text is what the client reads; the pyfunc
turns it into MLflow's INVALID_PARAMETER_VALUE (HTTP 400). No mlflow import: the checks are
plain functions, unit-tested without a server.

A clip arrives as a base64 string (a JSON request; the signature declares the column ``Any``
so MLflow passes the string through) or as raw bytes (a local ``pyfunc.predict`` call). A
string is only ever base64: it is never taken as a file name, so a request cannot make the
server read its own files.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fsd.inference.clips import WINDOW_DECODE_SLOTS, ClipError, clips_features
from fsd.inference.inflight import IN_FLIGHT, Busy, check_cancel, slot
from fsd.inference.scoring import cost_limit, request_cost, response_frame
from fsd.inference.windows import (
    MIN_HOP_SECONDS,
    MIN_WINDOW_SECONDS,
    score_windows,
    window_plan,
    windows_frame,
)

AUDIO_COLUMN = "audio"

# Bounds on what one request may ask of the ensemble; views per clip are folds x lengths x crops.
MAX_TTA_LENGTHS = 16
MAX_TTA_CROPS = 32
MAX_FRAMES = 4000  # ~40 s of log-mel at hop 220 / 22.05 kHz
KNOWN_PARAMS = ("tta_lengths", "tta_crops", "top_k", "seed", "return_probabilities",
                "window_seconds", "hop_seconds")
# Long recordings tagged window by window (fsd.inference.windows): a window's length and hop.
MAX_WINDOW_SECONDS = 60.0


# Decoded samples (all channels, all clips) one request may cost, checked on the clips'
# headers before any clip is decoded: 4 clips at the per-clip bound (fsd.data.audio's
# max_seconds x MAX_SAMPLES_PER_SECOND, 23M at 60 s), or 64 clips of 30 s at 48 kHz.
MAX_REQUEST_SAMPLES = 92_160_000


class RequestError(ValueError):
    """A request that must be refused with a 4xx; ``str(err)`` says what is wrong with it.

    Its text is built from what was checked (counts, limits, row numbers, type names), never
    from the request's own values: it reaches the client."""


# The refusals of the request being served, for the serving front (fsd.serving.front), which
# runs in the same process and sets a list here before it calls the scoring app: the front
# answers a refused request with this text instead of MLflow's message, which quotes the
# request. Context variables follow the request into MLflow's worker thread.
REFUSALS: contextvars.ContextVar[list[tuple[int, str]] | None] = contextvars.ContextVar(
    "fsd_refusals", default=None)


def note_refusal(message: str, status: int = 400) -> None:
    """Record a refusal (its HTTP status and text) for the front (a no-op outside a served
    request)."""
    refusals = REFUSALS.get()
    if refusals is not None:
        refusals.append((status, message))


@dataclass(frozen=True)
class InferenceParams:
    """Per-request inference settings (MLflow ``params``), already checked."""

    tta_lengths: tuple[int, ...]
    tta_crops: int
    top_k: int
    seed: int
    return_probabilities: bool
    # 0: one answer per clip; else one per window of this many seconds, every hop_seconds
    window_seconds: float = 0.0
    hop_seconds: float = 0.0
    tta_given: bool = False  # the request set tta_lengths or tta_crops itself


def clips_from_frame(frame: Any, max_clips: int, max_clip_bytes: int) -> list[bytes]:
    """The request's clips as bytes, one per row of the ``audio`` column.

    Refuses: a non-table input, a missing ``audio`` column or any other column, no rows, more
    than ``max_clips`` rows, and any value that is null, empty, not bytes/base64, or larger
    than ``max_clip_bytes`` (checked on the encoded size first, so nothing big is decoded).
    """
    return decode_rows(request_rows(frame, max_clips), max_clip_bytes)


def decode_rows(values: Sequence[Any], max_clip_bytes: int) -> list[bytes]:
    """Each row's clip as bytes (see :func:`clips_from_frame`)."""
    return [_clip_bytes(v, i, max_clip_bytes) for i, v in enumerate(values)]


def request_rows(frame: Any, max_clips: int) -> list[Any]:
    """The request's ``audio`` values, not decoded yet: the table's shape and row count are
    checked (see :func:`clips_from_frame`)."""
    if isinstance(frame, Mapping):
        frame = _frame_from_mapping(frame)
    if not isinstance(frame, pd.DataFrame):
        raise RequestError(
            f"expected a table with one column {AUDIO_COLUMN!r} (e.g. "
            f'{{"dataframe_split": {{"columns": ["{AUDIO_COLUMN}"], "data": [["<base64>"]]}}}}), '
            f"got a {_type(frame)}"
        )
    columns = [str(c) for c in frame.columns]
    if AUDIO_COLUMN not in columns:
        raise RequestError(
            f"missing column {AUDIO_COLUMN!r} (got {len(columns)} other column(s)); send each "
            f"clip's file bytes, base64-encoded, in a column named {AUDIO_COLUMN!r}"
        )
    extra = [c for c in columns if c != AUDIO_COLUMN]
    if extra:
        raise RequestError(f"{len(extra)} unexpected column(s); send only {AUDIO_COLUMN!r}")
    if len(columns) > 1:
        raise RequestError(f"column {AUDIO_COLUMN!r} appears {len(columns)} times; send it once")
    values = frame[AUDIO_COLUMN].tolist()
    nested = len(values) == 1 and (isinstance(values[0], (list, tuple)) or (
        isinstance(values[0], np.ndarray) and values[0].dtype != np.uint8))
    if nested:  # {"inputs": {"audio": [clip, clip]}} reaches the model as one row of a list
        values = list(values[0])
    n = len(values)
    if n == 0:
        raise RequestError("empty request: no clips")
    if n > max_clips:
        raise RequestError(
            f"too many clips in one request: {n} > {max_clips} (ensemble.max_request_clips); "
            "split it into several requests"
        )
    return values


def _frame_from_mapping(data: Mapping) -> pd.DataFrame:
    if AUDIO_COLUMN in data and isinstance(data[AUDIO_COLUMN], (bytes, bytearray, str)):
        return pd.DataFrame({k: [v] for k, v in data.items()})
    try:
        return pd.DataFrame(dict(data))
    except (ValueError, TypeError) as exc:
        raise RequestError(f"cannot read the request as a table ({type(exc).__name__})") from None


def _clip_bytes(value: Any, row: int, max_bytes: int) -> bytes:
    where = f"row {row}"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise RequestError(f"{where}: no audio (null)")
    if isinstance(value, np.ndarray) and value.dtype == np.uint8:
        value = value.tobytes()
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, str):
        text = "".join(value.split())  # base64 from encodebytes carries newlines
        if not text:
            raise RequestError(f"{where}: empty audio (0 bytes)")
        if len(text) * 3 // 4 > max_bytes:
            raise RequestError(_too_large(where, len(text) * 3 // 4, max_bytes))
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(
                f"{where}: not base64: send the file's bytes base64-encoded (a string is never "
                "read as a file name)"
            ) from None
    else:
        raise RequestError(
            f"{where}: expected the file's bytes (base64 in JSON), got a {_type(value)}"
        )
    if not data:
        raise RequestError(f"{where}: empty audio (0 bytes)")
    if len(data) > max_bytes:
        raise RequestError(_too_large(where, len(data), max_bytes))
    return data


def _too_large(where: str, size: int, limit: int) -> str:
    return f"{where}: clip too large: {size} bytes > {limit} (ensemble.max_clip_bytes)"


def parse_params(
    params: Mapping[str, Any] | None, *, default_lengths: Sequence[int], default_crops: int,
    default_top_k: int, default_seed: int, n_classes: int,
) -> InferenceParams:
    """Check the request's inference params against the ensemble's defaults and bounds."""
    params = dict(params or {})
    known = set(KNOWN_PARAMS)
    unknown = sorted(str(k) for k in set(params) - known)
    if unknown:
        raise RequestError(f"{len(unknown)} unknown param(s); known: {sorted(known)}")
    lengths = params.get("tta_lengths")
    if lengths is None or (isinstance(lengths, (list, tuple, np.ndarray)) and len(lengths) == 0):
        lengths = list(default_lengths)
    if isinstance(lengths, str):
        lengths = [p for p in lengths.replace(",", " ").split() if p]
    if not isinstance(lengths, (list, tuple, np.ndarray)):
        lengths = [lengths]
    if len(lengths) > MAX_TTA_LENGTHS:
        raise RequestError(f"tta_lengths: at most {MAX_TTA_LENGTHS} lengths, got {len(lengths)}")
    lengths_t = tuple(_int(v, "tta_lengths", 1, MAX_FRAMES) for v in lengths)
    window, hop = _window(params)
    return InferenceParams(
        tta_lengths=lengths_t,
        tta_crops=_int(params.get("tta_crops", default_crops), "tta_crops", 1, MAX_TTA_CROPS),
        top_k=_int(params.get("top_k", default_top_k), "top_k", 1, n_classes),
        seed=_int(params.get("seed", default_seed), "seed", 0, 2**32 - 1),
        return_probabilities=_bool(params.get("return_probabilities", False),
                                   "return_probabilities"),
        window_seconds=window, hop_seconds=hop,
        tta_given=_given(params.get("tta_lengths")) or _given(params.get("tta_crops")),
    )


def check_param_types(params: Mapping[str, Any]) -> None:
    """Each known param's type (not its range: that needs the model), so a wrong-type param
    is named before MLflow's own schema check answers it with a message that names nothing:
    a RequestError naming the param and the type it needs, never the value."""
    for name in ("top_k", "tta_crops", "seed"):
        if params.get(name) is not None:
            _int(params[name], name, -2**63, 2**63)
    lengths = params.get("tta_lengths")
    if lengths is not None and not isinstance(lengths, str):
        for v in (lengths if isinstance(lengths, (list, tuple)) else [lengths]):
            _int(v, "tta_lengths", -2**63, 2**63)
    if params.get("return_probabilities") is not None:
        _bool(params["return_probabilities"], "return_probabilities")
    for name in ("window_seconds", "hop_seconds"):
        if params.get(name) is not None:
            _float(params[name], name)


def _given(value: Any) -> bool:
    return value is not None and not (isinstance(value, (list, tuple, np.ndarray, str))
                                      and len(value) == 0)


def _window(params: Mapping[str, Any]) -> tuple[float, float]:
    """``window_seconds`` and ``hop_seconds`` checked: (0, 0) when no window is asked; a hop
    left out (or 0) is the window itself."""
    window = _float(params.get("window_seconds", 0.0), "window_seconds")
    hop = _float(params.get("hop_seconds", 0.0), "hop_seconds")
    if window == 0.0:
        if hop != 0.0:
            raise RequestError("hop_seconds needs window_seconds")
        return 0.0, 0.0
    if not MIN_WINDOW_SECONDS <= window <= MAX_WINDOW_SECONDS:
        raise RequestError(f"window_seconds: outside [{MIN_WINDOW_SECONDS:g}, "
                           f"{MAX_WINDOW_SECONDS:g}] (or 0: no windows)")
    hop = hop or window
    if not MIN_HOP_SECONDS <= hop <= window:
        raise RequestError(f"hop_seconds: outside [{MIN_HOP_SECONDS:g}, window_seconds]")
    return window, hop


def _float(value: Any, name: str) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        return 0.0
    if isinstance(value, (bool, np.bool_)):
        raise RequestError(f"{name}: expected a number, got a {_type(value)}")
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        raise RequestError(f"{name}: expected a number, got a {_type(value)}") from None
    if not math.isfinite(f) or f < 0:
        raise RequestError(f"{name}: expected a finite number >= 0")
    return f


def _int(value: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise RequestError(f"{name}: expected an integer, got a {_type(value)}")
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        raise RequestError(f"{name}: expected an integer, got a {_type(value)}") from None
    if not math.isfinite(f) or not f.is_integer():
        raise RequestError(f"{name}: expected an integer, got a number that is not one")
    i = int(f)
    if not lo <= i <= hi:
        shown = i if abs(i) < 10**12 else "the value"  # parsed and bounded, not the input
        raise RequestError(f"{name}: {shown} is outside [{lo}, {hi}]")
    return i


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise RequestError(f"{name}: expected true or false, got a {_type(value)}")


def _type(value: Any) -> str:
    """A value's kind for an error message (never the value: it is the client's input)."""
    if isinstance(value, (bool, np.bool_)):
        return "boolean"
    if isinstance(value, (int, float, np.number)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple, np.ndarray)):
        return "list"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, pd.DataFrame):
        return "table"
    return "value of another type"


def check_cost(n_clips: int, p: InferenceParams, limit: int) -> None:
    """Refuse a request whose work (:func:`request_cost`) exceeds ``limit`` view frames."""
    cost = request_cost(n_clips, p.tta_lengths, p.tta_crops)
    if cost > limit:
        raise RequestError(
            f"request too costly: {n_clips} clip(s) x {p.tta_crops} crops x "
            f"{sum(p.tta_lengths)} frames of tta_lengths = {cost:,} view frames > {limit:,} "
            "(ensemble.max_request_frames); send fewer clips, crops or lengths"
        )



def check_headers(blobs: Sequence[bytes], audio_cfg,
                  max_samples: int = MAX_REQUEST_SAMPLES) -> None:
    """Refuse, from the clips' headers and before any clip is decoded, a clip that would
    decode to more samples than ``fsd.data.audio.check_size`` allows, and a request whose
    clips together would decode to more than ``max_samples`` (frames x channels, all clips).
    A clip whose header cannot be read is left to the decoder (which names the reason)."""
    import soundfile as sf

    from fsd.data.audio import AudioError, check_size

    total = 0
    for i, blob in enumerate(blobs):
        try:
            info = sf.info(io.BytesIO(bytes(blob)))
            frames, channels, rate = int(info.frames), int(info.channels), int(info.samplerate)
        except Exception:  # not audio libsndfile reads: decoding says why
            continue
        if rate <= 0 or channels <= 0 or frames < 0:
            continue
        try:
            check_size(frames, channels, rate, audio_cfg.max_seconds)
        except AudioError as exc:
            raise RequestError(f"row {i}: not usable audio: {exc}") from None
        total += frames * channels
        if total > max_samples:
            raise RequestError(
                f"request too large once decoded: the clips' headers declare more than "
                f"{max_samples:,} samples (frames x channels) in all; send fewer or shorter "
                "clips")


def clip_features(blobs: Sequence[bytes], cfg) -> tuple[list[np.ndarray], np.ndarray | None]:
    """The request's clips decoded and featurized as training did
    (:func:`fsd.inference.clips.clips_features`, at most ``DECODE_SLOTS`` at once), after their
    headers (:func:`check_headers`); a clip that is not usable audio is a RequestError naming
    its row and the reason."""
    check_headers(blobs, cfg.audio)
    try:
        return clips_features(blobs, cfg)
    except ClipError as exc:
        raise RequestError(str(exc)) from None


# --- long recordings window by window ---------------------------------------------------------
# A request with window_seconds: bounded before decoding (each recording's header, then the
# windows' work against max_request_frames), then fsd.features.windows' one streamed decode
# per recording, each window scored as a clip (fsd.inference.windows, which also summarises).

def recording_headers(blobs: Sequence[bytes], max_seconds: float) -> list[float]:
    """Each recording's duration from its header, refusing before any decoding: a header that
    cannot be read (windows are planned from it), a recording over ``max_seconds``, one that
    would decode to too many samples, and a request over ``MAX_REQUEST_SAMPLES`` in all."""
    import soundfile as sf

    from fsd.data.audio import AudioError, check_size

    out, total = [], 0
    for i, blob in enumerate(blobs):
        try:
            info = sf.info(io.BytesIO(bytes(blob)))
            frames, channels, rate = int(info.frames), int(info.channels), int(info.samplerate)
        except Exception:
            raise RequestError(f"row {i}: not usable audio: its header cannot be read") from None
        if rate <= 0 or channels <= 0 or frames <= 0:
            raise RequestError(f"row {i}: not usable audio: an empty or invalid header")
        try:
            check_size(frames, channels, rate, max_seconds)
        except AudioError as exc:
            raise RequestError(f"row {i}: not usable audio for windows: {exc} "
                               "(ensemble.max_recording_seconds)") from None
        total += frames * channels
        if total > MAX_REQUEST_SAMPLES:
            raise RequestError(f"request too large once decoded: the recordings' headers "
                               f"declare more than {MAX_REQUEST_SAMPLES:,} samples in all")
        out.append(frames / rate)
    return out


def score_windowed_request(ensemble, rows: list[Any], p: InferenceParams) -> pd.DataFrame:
    """A request with ``window_seconds``: one row per window of each clip (``clip`` is the
    request's row), bounded as the module docstring says."""
    info, cfg = ensemble.info, ensemble.cfg
    max_seconds = float(getattr(cfg.ensemble, "max_recording_seconds", 600.0))
    blobs = decode_rows(rows, info.max_clip_bytes)
    durations = recording_headers(blobs, max_seconds)
    # the request's TTA when it set one, else the whole window (or the recording when it is
    # shorter) once
    plans = [window_plan(d, p.window_seconds, p.hop_seconds, cfg,
                         p.tta_lengths if p.tta_given else None, p.tta_crops,
                         whole=(info.tta_lengths, info.tta_crops)) for d in durations]
    n_windows = sum(pl.n_windows for pl in plans)
    cost, limit = sum(pl.cost for pl in plans), cost_limit(info)
    if cost > limit:
        raise RequestError(
            f"request too costly: {n_windows:,} windows of {p.window_seconds:g} s every "
            f"{p.hop_seconds:g} s = {cost:,} view frames > {limit:,} "
            "(ensemble.max_request_frames); use a longer hop_seconds or send shorter recordings")
    with IN_FLIGHT.admit(cost, limit):  # with the work in flight, or Busy (503) at once
        return _score_windows(ensemble, blobs, plans, p, max_seconds)


def _score_windows(ensemble, blobs: list[bytes], plans, p: InferenceParams,
                   max_seconds: float) -> pd.DataFrame:
    """Each admitted recording decoded (holding a decode slot) and scored window batch by
    window batch; a given-up request stops between blocks and batches."""
    from fsd.data.audio import AudioError
    from fsd.features.windows import window_features

    tables = []
    for i, blob in enumerate(blobs):
        try:
            with slot(WINDOW_DECODE_SLOTS):  # not the clips' pool: see its comment
                wf = window_features(blob, ensemble.cfg, p.window_seconds, p.hop_seconds,
                                     max_seconds=max_seconds, between_blocks=check_cancel)
        except AudioError as exc:
            raise RequestError(f"row {i}: not usable audio: {exc}") from None
        except ValueError:
            raise RequestError(f"row {i}: cannot compute features of this recording") from None
        probs = score_windows(ensemble, wf, plans[i].lengths, plans[i].crops, p.seed)
        table = windows_frame(wf, probs, ensemble.labels, p.top_k, p.return_probabilities)
        table.insert(0, "clip", i)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def score_request(ensemble, model_input: Any, params: Mapping[str, Any] | None) -> pd.DataFrame:
    """The whole request path without MLflow: validate, decode, featurize, TTA, top-k.

    ``ensemble`` is a :class:`fsd.ensemble.bundle.Ensemble`. Raises RequestError for anything
    wrong with the request; parameters and the request's cost are checked before any clip is
    decoded. A refusal is also noted for the serving front (:func:`note_refusal`).
    """
    try:
        return _score(ensemble, model_input, params)
    except RequestError as exc:
        note_refusal(str(exc))
        raise
    except Busy as exc:
        note_refusal(str(exc), 503)
        raise


def _score(ensemble, model_input: Any, params: Mapping[str, Any] | None) -> pd.DataFrame:
    info = ensemble.info
    rows = request_rows(model_input, info.max_request_clips)
    p = parse_params(params, default_lengths=info.tta_lengths, default_crops=info.tta_crops,
                     default_top_k=info.top_k, default_seed=info.seed,
                     n_classes=len(ensemble.labels))
    if p.window_seconds:  # a long recording, window by window
        return score_windowed_request(ensemble, rows, p)
    check_cost(len(rows), p, cost_limit(info))  # before any clip is decoded
    # admitted with the work already in flight, or Busy (503) at once
    with IN_FLIGHT.admit(request_cost(len(rows), p.tta_lengths, p.tta_crops), cost_limit(info)):
        blobs = decode_rows(rows, info.max_clip_bytes)
        logmels, summaries = clip_features(blobs, ensemble.cfg)
        check_cancel()
        probs = ensemble.predict(logmels, summaries, p.tta_lengths, p.tta_crops, p.seed)
    return response_frame(probs, ensemble.labels, p.top_k, p.return_probabilities)
