"""What a scoring request may contain, checked before any audio is decoded.

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
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

AUDIO_COLUMN = "audio"

# Bounds on what one request may ask of the ensemble; views per clip are folds x lengths x crops.
MAX_TTA_LENGTHS = 16
MAX_TTA_CROPS = 32
MAX_FRAMES = 4000  # ~40 s of log-mel at hop 220 / 22.05 kHz
# The work of one request, bounded as a whole: view frames per fold model, clips x crops x the
# sum of the lengths (each view is one crop of one clip at one length). Each bound above alone
# let 4 clips x 16 lengths of 4000 x 32 crops (8.2M frames, minutes of CPU) through. The
# default admits ensemble.max_request_clips clips at the recipe's defaults (64 x 5 crops x six
# lengths summing ~3,100 frames = ~1M); a bundle's own defaults are always admitted.
MAX_REQUEST_FRAMES = 2_000_000
KNOWN_PARAMS = ("tta_lengths", "tta_crops", "top_k", "seed", "return_probabilities")


class RequestError(ValueError):
    """A request that must be refused with a 4xx; ``str(err)`` says what is wrong with it."""


@dataclass(frozen=True)
class InferenceParams:
    """Per-request inference settings (MLflow ``params``), already checked."""

    tta_lengths: tuple[int, ...]
    tta_crops: int
    top_k: int
    seed: int
    return_probabilities: bool


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
            f"got {type(frame).__name__}"
        )
    columns = [str(c) for c in frame.columns]
    if AUDIO_COLUMN not in columns:
        raise RequestError(
            f"missing column {AUDIO_COLUMN!r} (got {_names(columns)}); send each clip's file bytes, "
            f"base64-encoded, in a column named {AUDIO_COLUMN!r}"
        )
    extra = [c for c in columns if c != AUDIO_COLUMN]
    if extra:
        raise RequestError(f"unexpected column(s) {_names(extra)}; send only {AUDIO_COLUMN!r}")
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
            f"{where}: expected the file's bytes (base64 in JSON), got {type(value).__name__}"
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
        raise RequestError(f"unknown param(s) {[_show(k) for k in unknown[:5]]}; "
                           f"known: {sorted(known)}")
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
    return InferenceParams(
        tta_lengths=lengths_t,
        tta_crops=_int(params.get("tta_crops", default_crops), "tta_crops", 1, MAX_TTA_CROPS),
        top_k=_int(params.get("top_k", default_top_k), "top_k", 1, n_classes),
        seed=_int(params.get("seed", default_seed), "seed", 0, 2**32 - 1),
        return_probabilities=_bool(params.get("return_probabilities", False),
                                   "return_probabilities"),
    )


def _int(value: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise RequestError(f"{name}: expected an integer, got {_show(value)}")
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        raise RequestError(f"{name}: expected an integer, got {_show(value)}") from None
    if not math.isfinite(f) or not f.is_integer():
        raise RequestError(f"{name}: expected an integer, got {_show(value)}")
    i = int(f)
    if not lo <= i <= hi:
        raise RequestError(f"{name}: {i} is outside [{lo}, {hi}]")
    return i


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise RequestError(f"{name}: expected true or false, got {_show(value)}")


def _show(value: Any, limit: int = 40) -> str:
    """A short repr for an error message: a request's values are never echoed at length."""
    if isinstance(value, (str, bytes, int, float, bool, np.generic)) or value is None:
        text = repr(value)
    else:
        text = f"a {type(value).__name__}"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _names(names: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(_show(c) for c in names[:n])
    return f"[{shown}{', ...' if len(names) > n else ''}]"


def request_cost(n_clips: int, lengths: Sequence[int], crops: int) -> int:
    """View frames one fold model computes for a request: clips x crops x sum of lengths."""
    return int(n_clips) * int(crops) * int(sum(int(v) for v in lengths))


def check_cost(n_clips: int, p: InferenceParams, limit: int) -> None:
    """Refuse a request whose work (:func:`request_cost`) exceeds ``limit`` view frames."""
    cost = request_cost(n_clips, p.tta_lengths, p.tta_crops)
    if cost > limit:
        raise RequestError(
            f"request too costly: {n_clips} clip(s) x {p.tta_crops} crops x "
            f"{sum(p.tta_lengths)} frames of tta_lengths = {cost:,} view frames > {limit:,} "
            "(ensemble.max_request_frames); send fewer clips, crops or lengths"
        )


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


def clip_features(blobs: Sequence[bytes], cfg) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Decode and featurize each clip as training did (``extract_clip``); a clip that is not
    usable audio is a RequestError naming its row and the reason."""
    from fsd.data.audio import AudioError
    from fsd.features.extract import extract_clip

    logmels: list[np.ndarray] = []
    summaries: list[np.ndarray] = []
    for i, blob in enumerate(blobs):
        try:
            feats = extract_clip(bytes(blob), cfg)
        except AudioError as exc:
            raise RequestError(f"row {i}: not usable audio: {exc}") from None
        except ValueError as exc:  # feature code refusing a degenerate clip (e.g. no frames)
            raise RequestError(f"row {i}: cannot compute features: {exc}") from None
        if feats.logmel is None or len(feats.logmel) == 0:
            raise RequestError(f"row {i}: too short to compute a log-mel frame")
        logmels.append(np.asarray(feats.logmel, dtype=np.float32))
        if feats.summary is not None and np.size(feats.summary):  # empty: summary disabled
            summaries.append(np.asarray(feats.summary, dtype=np.float32))
    summary = np.stack(summaries) if len(summaries) == len(logmels) else None
    return logmels, summary


def score_request(ensemble, model_input: Any, params: Mapping[str, Any] | None) -> pd.DataFrame:
    """The whole request path without MLflow: validate, decode, featurize, TTA, top-k.

    ``ensemble`` is a :class:`fsd.ensemble.bundle.Ensemble`. Raises RequestError for anything
    wrong with the request; parameters and the request's cost are checked before any clip is
    decoded.
    """
    info = ensemble.info
    rows = request_rows(model_input, info.max_request_clips)
    p = parse_params(params, default_lengths=info.tta_lengths, default_crops=info.tta_crops,
                     default_top_k=info.top_k, default_seed=info.seed,
                     n_classes=len(ensemble.labels))
    check_cost(len(rows), p, cost_limit(info))  # before any clip is decoded
    blobs = decode_rows(rows, info.max_clip_bytes)
    logmels, summaries = clip_features(blobs, ensemble.cfg)
    probs = ensemble.predict(logmels, summaries, p.tta_lengths, p.tta_crops, p.seed)
    return response_frame(probs, ensemble.labels, p.top_k, p.return_probabilities)
