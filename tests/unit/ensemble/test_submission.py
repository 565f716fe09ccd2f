"""The Kaggle submission: every test clip, three distinct labels, prior for clips without audio."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fsd.ensemble.submission import (
    build_submission,
    class_prior,
    map_at_k_labels,
    score_submission,
    validate_submission,
)

LABELS = ["a", "b", "c", "d", "e"]


def test_every_test_clip_listed_with_three_labels():
    all_names = ["t1.wav", "t2.wav", "empty1.wav", "t3.wav", "empty2.wav"]
    scored = ["t3.wav", "t1.wav", "t2.wav"]
    probs = np.array([[0.1, 0.2, 0.3, 0.4, 0.0],
                      [0.9, 0.05, 0.03, 0.02, 0.0],
                      [0.0, 0.0, 0.1, 0.2, 0.7]])
    prior = class_prior([4, 4, 4, 1, 1, 0], len(LABELS))
    sub = build_submission(all_names, scored, probs, LABELS, prior)
    assert list(sub.columns) == ["fname", "label"]
    assert sub["fname"].tolist() == all_names  # order of the dataset's list kept
    got = dict(zip(sub["fname"], sub["label"]))
    assert got["t3.wav"] == "d c b"
    assert got["t1.wav"] == "a b c"
    assert got["t2.wav"] == "e d c"
    # no features: the training prior's top 3 (e most frequent, then b, then a by label order)
    assert got["empty1.wav"] == got["empty2.wav"] == "e b a"
    validate_submission(sub, all_names, LABELS)
    for text in sub["label"]:
        assert len(text.split(" ")) == 3 and len(set(text.split(" "))) == 3


def test_scored_clip_missing_from_the_list_is_kept():
    sub = build_submission(["x"], ["y"], np.eye(5)[[1]], LABELS, class_prior([0], 5))
    assert sub["fname"].tolist() == ["x", "y"]


def test_validate_refuses_missing_duplicate_and_bad_labels():
    good = pd.DataFrame({"fname": ["x", "y"], "label": ["a b c", "c d e"]})
    validate_submission(good, ["x", "y"], LABELS)
    with pytest.raises(ValueError, match="missing"):
        validate_submission(good, ["x", "y", "z"], LABELS)
    with pytest.raises(ValueError, match="duplicate"):
        validate_submission(pd.concat([good, good.head(1)]), ["x", "y"], LABELS)
    with pytest.raises(ValueError, match="3 distinct"):
        validate_submission(pd.DataFrame({"fname": ["x"], "label": ["a a b"]}), ["x"], LABELS)
    with pytest.raises(ValueError, match="3 distinct"):
        validate_submission(pd.DataFrame({"fname": ["x"], "label": ["a b"]}), ["x"], LABELS)
    with pytest.raises(ValueError, match="3 distinct"):
        validate_submission(pd.DataFrame({"fname": ["x"], "label": ["a b zz"]}), ["x"], LABELS)


def test_map_at_3_on_labels():
    assert map_at_k_labels([["a", "b", "c"], ["a", "b", "c"], ["a", "b", "c"], ["a", "b", "c"]],
                           ["a", "b", "c", "d"]) == pytest.approx((1 + 1 / 2 + 1 / 3 + 0) / 4)


def test_public_private_scores_use_usage_and_skip_ignored():
    sub = pd.DataFrame({"fname": ["p1", "p2", "q1", "i1", "u1"],
                        "label": ["a b c", "b a c", "c b a", "a b c", "a b c"]})
    test = pd.DataFrame({"fname": ["p1", "p2", "q1", "i1", "u1"],
                         "label": ["a", "a", "a", "e", ""],
                         "usage": ["Public", "Public", "Private", "Ignored", ""]})
    s = score_submission(sub, test)
    assert s["public_map3"] == pytest.approx((1 + 0.5) / 2)
    assert s["private_map3"] == pytest.approx(1 / 3)
    assert s["test_map3"] == pytest.approx((1 + 0.5 + 1 / 3) / 3)
    assert s["n_scored"] == 3
    assert score_submission(sub, test.assign(label="")) == {}
