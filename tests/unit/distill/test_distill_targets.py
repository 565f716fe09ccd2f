"""A student's targets: hard labels mixed with the softened teacher; the honest fold split."""

import numpy as np
import pytest

from fsd.distill.targets import fold_teacher_rows, mix_targets, soften


def test_soften_spreads_mass_and_keeps_the_order():
    p = np.array([[0.7, 0.2, 0.1]])
    np.testing.assert_allclose(soften(p, 1.0), p, rtol=1e-6)
    hot = soften(p, 3.0)
    assert hot.sum() == pytest.approx(1.0) and hot[0, 0] < 0.7 and hot[0, 2] > 0.1
    assert list(np.argsort(-hot[0])) == [0, 1, 2]
    # T -> 0: the teacher's argmax, one-hot
    np.testing.assert_allclose(soften(p, 0.01), [[1, 0, 0]], atol=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        soften(p, 0.0)


def test_targets_mix_hard_and_soft_and_unlabeled_clips_get_the_teacher():
    teacher = np.array([[0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.2, 0.5, 0.3]])
    y = np.array([1, 2, -1])
    t = mix_targets(y, teacher, hard_weight=0.25, temperature=1.0)
    np.testing.assert_allclose(t[0], 0.25 * np.array([0, 1, 0]) + 0.75 * teacher[0], rtol=1e-6)
    np.testing.assert_allclose(t[1], 0.25 * np.array([0, 0, 1]) + 0.75 * teacher[1], rtol=1e-6)
    np.testing.assert_allclose(t[2], teacher[2], rtol=1e-6)  # unlabeled: the teacher alone
    np.testing.assert_allclose(t.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(mix_targets(y[:2], teacher[:2], 1.0, 2.0), np.eye(3)[[1, 2]])
    with pytest.raises(ValueError, match="hard_weight"):
        mix_targets(y, teacher, 1.5, 1.0)
    with pytest.raises(ValueError, match="rows"):
        mix_targets(y[:2], teacher, 0.5, 1.0)
    with pytest.raises(ValueError, match="class ids"):
        mix_targets(np.array([3, 0, 0]), teacher, 0.5, 1.0)


def test_the_fold_k_student_trains_on_every_other_fold_and_never_on_fold_k():
    folds = np.array([0, 1, 2, 0, 1, 2, -1])
    train, held = fold_teacher_rows(folds, 1)
    assert list(held) == [1, 4]
    assert list(train) == [0, 2, 3, 5]  # the unlabeled row (-1) is the caller's to add
    with pytest.raises(ValueError, match="fold 7"):
        fold_teacher_rows(folds, 7)


def test_the_distill_section_has_rules():
    from fsd.config import ConfigError, load_config

    cfg = load_config("experiments/demo.yaml")
    assert not cfg.distill.enabled and 0 <= cfg.distill.hard_weight <= 1
    with pytest.raises(ConfigError, match="distill.temperature"):
        load_config("experiments/demo.yaml", ["distill.temperature=0"])
    with pytest.raises(ConfigError, match="distill.hard_weight"):
        load_config("experiments/demo.yaml", ["distill.hard_weight=1.5"])


def test_the_student_has_its_own_tta_one_pass_by_default():
    """The student is scored and served with distill.tta_* (1 x 1 by default), not the
    ensemble's lengths x crops."""
    from fsd.config import ConfigError, load_config
    from fsd.distill.student import student_tta

    cfg = load_config("experiments/demo.yaml")
    assert cfg.ensemble.tta_n_lengths * cfg.ensemble.tta_crops > 1
    assert student_tta(cfg, (30, 60)) == ([45], 1)
    three = load_config("experiments/demo.yaml", ["distill.tta_n_lengths=3",
                                                  "distill.tta_crops=2"])
    assert student_tta(three, (30, 60)) == ([30, 45, 60], 2)
    with pytest.raises(ConfigError, match="distill.tta_crops"):
        load_config("experiments/demo.yaml", ["distill.tta_crops=0"])
