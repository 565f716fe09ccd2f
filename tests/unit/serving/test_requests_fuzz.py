"""Property-based fuzzing (hypothesis) of the request parser (params, the table of clips) and the
serving front's body checks: a value or the module's own short refusal, never another exception."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from fuzz_strategies import SETTINGS, json_values
from hypothesis import given
from hypothesis import strategies as st

from fsd.serving.requests import (
    KNOWN_PARAMS,
    InferenceParams,
    RequestError,
    clips_from_frame,
    parse_params,
)


@SETTINGS
@given(st.dictionaries(st.one_of(st.sampled_from(KNOWN_PARAMS), st.text(max_size=20)),
                       json_values, max_size=6))
def test_params_parse_or_refuse_briefly(params):
    try:
        p = parse_params(params, default_lengths=[100, 200], default_crops=2, default_top_k=3,
                         default_seed=0, n_classes=5)
    except RequestError as exc:
        assert 0 < len(str(exc)) < 400
        return
    assert isinstance(p, InferenceParams)
    assert 1 <= len(p.tta_lengths) <= 16 and all(1 <= v <= 4000 for v in p.tta_lengths)
    assert 1 <= p.tta_crops <= 32 and 1 <= p.top_k <= 5


cells = st.one_of(st.none(), st.text(max_size=60), st.binary(max_size=60),
                  st.integers(), st.floats(allow_nan=True),
                  st.lists(st.text(max_size=10), max_size=3))


@SETTINGS
@given(st.dictionaries(st.one_of(st.just("audio"), st.text(max_size=8)),
                       st.lists(cells, min_size=0, max_size=6), min_size=0, max_size=3))
def test_clip_tables_parse_or_refuse_briefly(columns):
    n = min((len(v) for v in columns.values()), default=0)
    frame = pd.DataFrame({k: v[:n] for k, v in columns.items()}) if columns else pd.DataFrame()
    try:
        blobs = clips_from_frame(frame, max_clips=4, max_clip_bytes=1000)
    except RequestError as exc:
        assert 0 < len(str(exc)) < 500
        return
    assert 1 <= len(blobs) <= 4 and all(isinstance(b, bytes) and 0 < len(b) <= 1000 for b in blobs)


@SETTINGS
@given(st.integers(2, 4), st.lists(cells, min_size=1, max_size=3))
def test_a_repeated_audio_column_is_refused(times, values):
    frame = pd.DataFrame([[v] * times for v in values], columns=["audio"] * times)
    with pytest.raises(RequestError, match="appears"):
        clips_from_frame(frame, max_clips=4, max_clip_bytes=1000)


def _check(body: bytes, content_type: str):
    from fsd.serving.front import Front, Refused

    front = Front(app=None, max_body_bytes=10_000)
    try:
        front._check(front._mime(content_type), body)
    except Refused as exc:
        assert 400 <= exc.status < 500 and len(exc.message) < 400
        return False
    return True


@SETTINGS
@given(st.binary(max_size=300), st.sampled_from(["application/json", "text/csv",
                                                 "application/vnd.apache.parquet"]))
def test_front_refuses_junk_bodies_with_4xx(body, content_type):
    _check(body, content_type)


@SETTINGS
@given(st.dictionaries(st.sampled_from(["dataframe_split", "dataframe_records", "inputs",
                                        "instances", "params", "data", "columns"]),
                       json_values, max_size=3))
def test_front_accepts_only_the_audio_column_and_known_params(doc):
    if _check(json.dumps(doc).encode(), "application/json"):
        keys = [k for k in doc if k != "params"]
        assert len(keys) == 1 and keys[0] in ("dataframe_split", "dataframe_records", "inputs",
                                              "instances")
        assert set(doc.get("params") or {}) <= set(KNOWN_PARAMS)
        data = doc[keys[0]]
        if keys[0] == "dataframe_split" and "columns" in data:
            assert data["columns"] == ["audio"]
