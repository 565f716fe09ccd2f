"""The headline's blend choices on arrays where choosing in sample and choosing out of fold
disagree: ``choose_blend`` (the served model's (baseline, weight), chosen on every clip) and
``nested_blend`` (each fold's choice made on the other folds: the honest score)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fsd.ensemble.stage import (
    BlendCandidate,
    OutOfFold,
    align_candidates,
    choose_blend,
    nested_blend,
)
from fsd.evaluation.blend import blend
from fsd.evaluation.metrics import reciprocal_ranks

LABELS = ["a", "b", "c"]
Y = np.array([0, 1, 2, 0, 1, 2])
FOLDS = np.array([0, 0, 0, 1, 1, 1])
NAMES = [f"c{i}.wav" for i in range(len(Y))]


def _probs(first_offset: int, on_fold: dict[int, tuple[float, float]]) -> np.ndarray:
    """Per clip: ``p_first`` on the class ``first_offset`` after the true one, ``p_true`` on
    the true class, the rest on the third (by fold)."""
    rows = []
    for t, f in zip(Y, FOLDS):
        p_first, p_true = on_fold[int(f)]
        p = np.full(3, 1 - p_first - p_true)
        p[(t + first_offset) % 3], p[t] = p_first, p_true
        rows.append(p)
    return np.array(rows, dtype=np.float32)


# The CNN ranks the true class second on fold 0 and first on fold 1; baseline A ranks it first
# on fold 0 and last on fold 1; B is weaker than A everywhere it matters.
CNN = _probs(1, {0: (0.5, 0.4), 1: (0.2, 0.7)})
A = _probs(2, {0: (0.2, 0.7), 1: (0.9, 0.05)})
B = _probs(2, {0: (0.6, 0.3), 1: (0.3, 0.6)})


def _oof() -> OutOfFold:
    return OutOfFold(names=NAMES, labels=LABELS, y=Y, folds=FOLDS, probs=CNN, scores=None,
                     seconds=0.0)


def _candidate(name: str, probs: np.ndarray, model: Path | None) -> BlendCandidate:
    frame = pd.DataFrame(probs, columns=LABELS)
    frame.insert(0, "fname", NAMES)
    return BlendCandidate(name=name, run_id=f"run-{name}", oof_map3=0.5, probabilities=frame,
                          fetch_model=lambda: model)


def _map3(probs: np.ndarray, rows=slice(None)) -> float:
    return float(reciprocal_ranks(Y[rows], probs[rows], 3).mean())


@pytest.fixture
def usable(tmp_path):
    model = tmp_path / "baseline.joblib"
    model.write_bytes(b"model")
    return align_candidates(_oof(), [_candidate("A", A, model), _candidate("B", B, model)])


def test_choose_blend_picks_the_pair_that_scores_best_on_every_clip(usable, tmp_path):
    chosen = choose_blend(_oof(), usable, steps=10)
    assert chosen is not None
    assert (chosen.name, chosen.run_id, chosen.weight) == ("A", "run-A", 0.8)
    # in sample the blend looks perfect, where the CNN alone scores 0.75
    assert chosen.oof_map3 == pytest.approx(1.0) and _map3(CNN) == pytest.approx(0.75)
    assert chosen.oof_accuracy == pytest.approx(1.0)
    np.testing.assert_allclose(chosen.probs, blend(CNN, A, 0.8))
    assert chosen.clips == len(Y) and chosen.model == tmp_path / "baseline.joblib"
    assert chosen.candidates["baseline"].tolist() == ["A", "B"]


def test_nested_blend_chooses_each_fold_on_the_others_and_scores_what_that_gives(usable):
    nested = nested_blend(_oof(), usable, steps=10)
    choices = nested.choices.set_index("fold")
    # fold 0 is chosen on fold 1, where the CNN is already right: w = 1 (ties: more CNN), so
    # fold 0 keeps the CNN's wrong ranking; fold 1 is chosen on fold 0, where A helps: 0.8
    assert choices.loc[0, "weight"] == 1.0 and choices.loc[1, "weight"] == 0.8
    assert choices.loc[1, "baseline"] == "A"
    assert choices.loc[0, "chosen_on_map3"] == pytest.approx(1.0)
    assert choices.loc[0, "held_out_map3"] == pytest.approx(0.5)
    assert choices.loc[1, "held_out_map3"] == pytest.approx(1.0)
    np.testing.assert_allclose(nested.probs[FOLDS == 0], CNN[FOLDS == 0])
    np.testing.assert_allclose(nested.probs[FOLDS == 1], blend(CNN, A, 0.8)[FOLDS == 1])
    # the honest figure is below the in-sample one (1.0) the same arrays give choose_blend
    assert _map3(nested.probs) == pytest.approx(0.75)
    assert _map3(nested.probs) < choose_blend(_oof(), usable, steps=10).oof_map3


def test_a_single_fold_keeps_the_cnn_and_a_missing_model_blends_nothing(tmp_path):
    one = OutOfFold(names=NAMES, labels=LABELS, y=Y, folds=np.zeros(len(Y), int), probs=CNN,
                    scores=None, seconds=0.0)
    usable = align_candidates(one, [_candidate("A", A, tmp_path / "m")])
    nested = nested_blend(one, usable, steps=10)
    assert nested.choices["baseline"].tolist() == [""]
    np.testing.assert_array_equal(nested.probs, CNN)
    # the winner's model cannot be fetched: no blend at all, not the runner-up
    assert choose_blend(_oof(), align_candidates(_oof(), [_candidate("A", A, None)]), 10) is None
