"""The work of a request is bounded as a whole, before any work; refusals never echo values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from audio_clips import wav_bytes


class _Info:
    tta_lengths, tta_crops, top_k, seed = [263, 363, 463, 563, 663, 763], 5, 3, 0
    max_request_clips, max_clip_bytes, max_request_frames = 64, 20_000_000, 0


class _Ensemble:
    """Counts what would be work: decoding (cfg access) and prediction."""

    info, labels = _Info(), [f"c{i}" for i in range(10)]

    @property
    def cfg(self):
        raise AssertionError("a clip was decoded")

    def predict(self, *a, **k):
        raise AssertionError("the model ran")


def _request(n: int, params=None):
    import base64

    b64 = base64.b64encode(wav_bytes(np.zeros(10))).decode()
    return pd.DataFrame({"audio": [b64] * n}), params


def test_a_too_costly_request_is_refused_before_any_work():
    from fsd.serving.requests import RequestError, score_request

    frame, params = _request(4, {"tta_lengths": [4000] * 16, "tta_crops": 32})
    with pytest.raises(RequestError, match="too costly") as err:
        score_request(_Ensemble(), frame, params)
    assert "8,192,000" in str(err.value)  # 4 clips x 32 crops x 64,000 frames
    # one clip at the maxima is also too much; each bound alone used to let both through
    frame, params = _request(1, {"tta_lengths": [4000] * 16, "tta_crops": 32})
    with pytest.raises(RequestError, match="too costly"):
        score_request(_Ensemble(), frame, params)


def test_the_bundles_own_defaults_are_always_admitted():
    from fsd.serving.requests import cost_limit, parse_params, request_cost

    info = _Info()
    assert request_cost(64, info.tta_lengths, 5) <= cost_limit(info)
    info.max_request_frames = 10  # even a tiny configured limit never refuses the defaults
    assert cost_limit(info) == request_cost(64, info.tta_lengths, 5)
    p = parse_params({"tta_crops": 6}, default_lengths=info.tta_lengths, default_crops=5,
                     default_top_k=3, default_seed=0, n_classes=10)
    assert request_cost(64, p.tta_lengths, p.tta_crops) > cost_limit(info)


def test_error_messages_do_not_echo_long_values():
    from fsd.serving.requests import RequestError, parse_params

    for params in ({"tta_crops": "x" * 10_000}, {"z" * 10_000: 1}, {"top_k": ["y"] * 1000}):
        with pytest.raises(RequestError) as err:
            parse_params(params, default_lengths=[10], default_crops=1, default_top_k=1,
                         default_seed=0, n_classes=3)
        assert len(str(err.value)) < 300


def test_the_serving_doc_states_the_batch_tolerance_it_is_tested_against():
    text = " ".join((Path(__file__).resolve().parents[3] / "docs" / "serving.md").read_text()
                    .split())
    assert "bit-for-bit the same answer alone or in any batch" not in text
    assert "alone or in any batch; its probabilities agree to float32 rounding, within 1e-6" \
        in text  # tests/e2e/test_serve_front.py checks 1e-6 on a served model
