"""MAP@3 against hand-computed cases, per-class AP, cross-entropy."""

from __future__ import annotations

import numpy as np
import pytest

from fsd.evaluation.metrics import categorical_crossentropy, map_at_k, per_class_ap, top_k_labels


def test_map3_hand_cases():
    probs = np.array([
        [0.7, 0.2, 0.1, 0.0],  # true 0: rank 1 -> 1
        [0.5, 0.3, 0.1, 0.1],  # true 1: rank 2 -> 1/2
        [0.4, 0.3, 0.2, 0.1],  # true 2: rank 3 -> 1/3
        [0.4, 0.3, 0.2, 0.1],  # true 3: rank 4 -> 0
    ])
    y = [0, 1, 2, 3]
    assert map_at_k(y, probs, k=3) == pytest.approx((1 + 1 / 2 + 1 / 3 + 0) / 4)
    assert map_at_k(y, probs, k=1) == pytest.approx(1 / 4)
    assert map_at_k(y, probs, k=4) == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)


def test_map3_perfect_and_worst():
    y = np.array([2, 0, 1])
    assert map_at_k(y, np.eye(5)[y]) == 1.0
    probs = np.tile([0.0, 0.0, 0.0, 0.5, 0.5], (3, 1))
    # ties resolve to the lower class index: the order is 3, 4, 0, 1, 2 for every row, so
    # only the clip of class 0 scores (rank 3)
    assert map_at_k(y, probs) == pytest.approx((0 + 1 / 3 + 0) / 3)


def test_map3_ties_are_deterministic():
    probs = np.full((1, 4), 0.25)
    assert map_at_k([0], probs) == 1.0
    assert map_at_k([2], probs) == pytest.approx(1 / 3)
    assert map_at_k([3], probs) == 0.0


def test_map3_rejects_bad_shapes():
    with pytest.raises(ValueError):
        map_at_k([0, 1], np.zeros((3, 4)))
    with pytest.raises(ValueError):
        map_at_k([], np.zeros((0, 4)))


def test_top_k_labels():
    assert top_k_labels(np.array([[0.1, 0.6, 0.3]]), ["a", "b", "c"], 2) == [["b", "c"]]


def test_per_class_ap_and_absent_class():
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1, 0], [0.8, 0.2, 0], [0.3, 0.7, 0], [0.6, 0.4, 0]])
    ap = per_class_ap(y, probs)
    assert ap[0] == pytest.approx(1.0)
    # class 1 scores: 0.1, 0.2, 0.7 (pos), 0.4 (pos) -> both positives ranked first
    assert ap[1] == pytest.approx(1.0)
    assert np.isnan(ap[2])


def test_categorical_crossentropy():
    probs = np.array([[0.5, 0.5], [0.25, 0.75]])
    assert categorical_crossentropy([0, 1], probs) == pytest.approx(-(np.log(0.5) + np.log(0.75)) / 2)
    assert np.isfinite(categorical_crossentropy([0], np.array([[0.0, 1.0]])))
