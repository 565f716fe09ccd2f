"""The blend rules on arrays where they differ: ``best`` takes a pooled gain that one fold
earns; ``majority`` wants the blend to beat the best single model on most folds."""

import numpy as np
import pytest

from fsd.evaluation.blend import BLEND_RULES, choose_rule, choose_weight

# three classes, every clip of class 0; see each kind's comment for who ranks it where
A = ([0.45, 0.55, 0.0], [1.0, 0.0, 0.0])  # baseline right, CNN second; any w < 10/11 right
B = ([1.0, 0.0, 0.0], [0.45, 0.55, 0.0])  # CNN right, baseline second; any w > 1/11 right
C = ([0.0, 1.0, 0.0], [0.5, 0.45, 0.05])  # baseline right, CNN second; only w < 1/21 right


def clips(*kinds_by_fold):
    cnn, base, folds = [], [], []
    for fold, kinds in enumerate(kinds_by_fold):
        for kind in kinds:
            cnn.append(kind[0])
            base.append(kind[1])
            folds.append(fold)
    return (np.zeros(len(folds), np.int64), np.array(cnn), np.array(base), np.array(folds))


def test_one_lucky_fold_buys_the_blend_under_best_but_not_under_majority():
    # fold 0: the blend gets every clip right, the baseline 3 of 5 halves; folds 1 and 2: the
    # blend (any w in [0.1, 0.9]) ranks C second where the baseline alone has it first
    y, cnn, base, folds = clips([B, B, B, B, A], [C, A], [C, A])
    best = choose_rule(y, cnn, [base], folds, 20, rule="best")
    assert best.weight == pytest.approx(0.9) and best.score == pytest.approx(8 / 9)
    majority = choose_rule(y, cnn, [base], folds, 20, rule="majority")
    # the best single model is the baseline (7/9; the CNN 6.5/9); the blend wins 1 of 3 folds
    assert (majority.candidate, majority.weight) == (0, 0.0)
    assert majority.score == pytest.approx(7 / 9)
    assert "1 of 3 folds" in majority.reason
    shrink = choose_rule(y, cnn, [base], folds, 20, rule="shrink")
    assert shrink.weight == pytest.approx(0.7)  # halfway from 0.9 toward 0.5


def test_a_blend_that_wins_most_folds_is_kept_by_majority():
    y, cnn, base, folds = clips([B, A], [B, A], [C, A])
    best = choose_rule(y, cnn, [base], folds, 20, rule="best")
    majority = choose_rule(y, cnn, [base], folds, 20, rule="majority")
    assert (majority.candidate, majority.weight, majority.score) == (
        best.candidate, best.weight, best.score)
    assert majority.weight == pytest.approx(0.9) and "2 of 3 folds" in majority.reason


def test_majority_prefers_the_cnn_alone_when_it_is_the_best_single_model():
    # the CNN alone beats the baseline; the blend beats the CNN on fold 0 only
    y, cnn, base, folds = clips([A, A, A, B], [B, B, C], [B, B, C])
    best = choose_rule(y, cnn, [base], folds, 20, rule="best")
    assert 0.0 < best.weight < 1.0
    majority = choose_rule(y, cnn, [base], folds, 20, rule="majority")
    assert majority.weight == 1.0 and "CNN alone" in majority.reason
    np.testing.assert_allclose(majority.score, np.mean([0.5, 0.5, 0.5, 1, 1, 1, 0.5, 1, 1, 0.5]))


def test_best_is_the_old_rule_and_picks_the_better_candidate():
    y, cnn, base, folds = clips([B, A], [B, A], [C, A])
    useless = np.array(cnn, copy=True)  # blending the CNN with itself gains nothing
    choice = choose_rule(y, cnn, [useless, base], folds, 20, rule="best")
    assert choice.candidate == 1
    assert choice.weight == choose_weight(y, cnn, base, 20).weight
    assert choose_rule(y, cnn, [], folds, 20).candidate == -1


def test_unknown_rule_and_misaligned_folds_are_refused():
    y, cnn, base, folds = clips([B, A])
    with pytest.raises(ValueError, match="unknown blend rule"):
        choose_rule(y, cnn, [base], folds, 20, rule="vote")
    with pytest.raises(ValueError, match="one row per clip"):
        choose_rule(y, cnn, [base], folds[:1], 20)


def test_the_config_offers_exactly_the_rules_there_are():
    from fsd.config import Config, load_config
    from fsd.config.errors import ConfigError

    assert Config().ensemble.blend_rule == "best" and Config().ensemble.blend_steps == 4
    for rule in BLEND_RULES:
        assert load_config("experiments/demo.yaml", [f"ensemble.blend_rule={rule}"])
    with pytest.raises(ConfigError, match="blend_rule"):
        load_config("experiments/demo.yaml", ["ensemble.blend_rule=vote"])
