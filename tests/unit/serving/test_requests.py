"""Request checks (no MLflow): what a request may hold, its params, the response table."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from fsd.serving.requests import (
    RequestError,
    clips_from_frame,
    parse_params,
    response_frame,
)


def _wav(seconds: float = 0.5, sr: int = 44100) -> bytes:
    buf = io.BytesIO()
    t = np.arange(int(seconds * sr)) / sr
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr, format="WAV")
    return buf.getvalue()


def test_bytes_and_base64_strings_are_accepted():
    wav = _wav()
    b64 = base64.b64encode(wav).decode()
    assert clips_from_frame(pd.DataFrame({"audio": [wav]}), 4, 10**7) == [wav]
    assert clips_from_frame(pd.DataFrame({"audio": [b64]}), 4, 10**7) == [wav]
    # encodebytes (what MLflow itself writes) wraps lines every 76 characters
    wrapped = base64.encodebytes(wav).decode()
    assert clips_from_frame(pd.DataFrame({"audio": [wrapped]}), 4, 10**7) == [wav]
    assert clips_from_frame({"audio": [wav, wav]}, 4, 10**7) == [wav, wav]
    # MLflow's {"inputs": {"audio": [...]}} arrives as one row holding the list
    one_row = pd.DataFrame({"audio": [[b64, b64]]})
    assert clips_from_frame(one_row, 4, 10**7) == [wav, wav]


@pytest.mark.parametrize("frame, message", [
    (pd.DataFrame({"sound": [b"x"]}), "missing column 'audio'"),
    (pd.DataFrame({"audio": [b"x"], "extra": [1]}), "unexpected column"),
    (pd.DataFrame({"audio": []}), "empty request"),
    (pd.DataFrame({"audio": [b""]}), "row 0: empty audio"),
    (pd.DataFrame({"audio": [""]}), "row 0: empty audio"),
    (pd.DataFrame({"audio": [None]}), "row 0: no audio"),
    (pd.DataFrame({"audio": [b"ok", 3]}), "row 1: expected the file's bytes"),
    (pd.DataFrame({"audio": ["not base64 at all!"]}), "row 0: not base64"),
    (pd.DataFrame({"audio": [b"x" * 101]}), "row 0: clip too large"),
    (pd.DataFrame({"audio": ["QUJD" * 40]}), "row 0: clip too large"),
    (pd.DataFrame({"audio": [b"x"] * 5}), "too many clips"),
    ([1, 2, 3], "expected a table"),
])
def test_malformed_requests_are_refused_with_a_reason(frame, message):
    with pytest.raises(RequestError, match=message):
        clips_from_frame(frame, max_clips=4, max_clip_bytes=100)


def test_a_path_string_is_never_opened(tmp_path):
    secret = tmp_path / "secret.wav"
    secret.write_bytes(_wav())
    # a path is not base64 ('/' and '.' aside, its length rarely fits): refused, not read
    for text in (str(secret), "/etc/passwd", "file:///etc/passwd"):
        with pytest.raises(RequestError, match="not base64"):
            clips_from_frame(pd.DataFrame({"audio": [text]}), 4, 10**7)
    # a path that happens to be valid base64 decodes to junk bytes, never the file's content
    out = clips_from_frame(pd.DataFrame({"audio": ["/etc/passwd0"]}), 4, 10**7)
    assert out[0] != b"" and b"root" not in out[0]


def _params(p):
    return parse_params(p, default_lengths=[100, 200], default_crops=2, default_top_k=3,
                        default_seed=0, n_classes=6)


def test_params_defaults_and_overrides():
    d = _params(None)
    assert (d.tta_lengths, d.tta_crops, d.top_k, d.seed, d.return_probabilities) == (
        (100, 200), 2, 3, 0, False)
    p = _params({"tta_lengths": [50], "tta_crops": "3", "top_k": 6, "seed": 9,
                 "return_probabilities": "true"})
    assert (p.tta_lengths, p.tta_crops, p.top_k, p.seed, p.return_probabilities) == (
        (50,), 3, 6, 9, True)
    assert _params({"tta_lengths": "60, 70"}).tta_lengths == (60, 70)


@pytest.mark.parametrize("params, message", [
    ({"top_k": 0}, "top_k: 0 is outside"),
    ({"top_k": 7}, "top_k: 7 is outside"),
    ({"tta_crops": 1000}, "tta_crops"),
    ({"tta_crops": 1.5}, "expected an integer"),
    ({"tta_lengths": [0]}, "tta_lengths"),
    ({"tta_lengths": list(range(10, 400, 10))}, "at most"),
    ({"seed": "x"}, "expected an integer"),
    ({"return_probabilities": "maybe"}, "true or false"),
    ({"bogus": 1}, "unknown param"),
])
def test_bad_params_are_refused(params, message):
    with pytest.raises(RequestError, match=message):
        _params(params)


def test_response_has_top_k_labels_and_scores_best_first():
    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    out = response_frame(probs, ["a", "b", "c"], 2)
    assert list(out.columns) == ["label_1", "score_1", "label_2", "score_2"]
    assert out["label_1"].tolist() == ["b", "a"] and out["label_2"].tolist() == ["c", "c"]
    np.testing.assert_allclose(out["score_1"], [0.6, 0.5])
    full = response_frame(probs, ["a", "b", "c"], 3, return_probabilities=True)
    assert [c for c in full.columns if c.startswith("prob_")] == ["prob_a", "prob_b", "prob_c"]
