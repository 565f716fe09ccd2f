"""A tiny student on random clips: it trains on soft targets, and the fold-k student never
sees fold k's labels (scrambling them changes nothing it learns or predicts)."""

import numpy as np
import pytest

pytest.importorskip("tensorflow")

pytestmark = pytest.mark.e2e

from fsd.config import load_config  # noqa: E402
from fsd.train.batches import MemoryStore  # noqa: E402

TINY = ["model.backbone=cnn", "model.cnn_channels=[4,8]", "model.cnn_convs=1", "model.dense1=8",
        "model.dense2=8", "train.batch_size=8", "train.crop_min=20", "train.crop_max=40",
        "train.crop_bucket=20", "distill.schedule.cyclic_epochs=1", "ensemble.tta_n_lengths=1",
        "ensemble.tta_crops=1", "train.min_steps_per_epoch=2"]


def store(seed: int = 2) -> MemoryStore:
    return MemoryStore.random(n_clips=24, n_classes=3, n_folds=3, frames=(20, 60), n_mels=8,
                              summary_dim=4, seed=seed)


def teachers(s: MemoryStore) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for k in range(3):
        p = rng.random((len(s.index), len(s.labels))).astype(np.float32)
        out[k] = p / p.sum(axis=1, keepdims=True)
    return out


def test_soft_targets_reach_the_batches_and_mix_like_labels():
    from fsd.train.batches import TrainBatches

    cfg = load_config("experiments/demo.yaml", TINY)
    s = store()
    rows = np.arange(8)
    soft = np.full((8, 3), 1 / 3, dtype=np.float32)
    b = TrainBatches(s, rows, cfg.train, (20, 40), 0.0, n_classes=3, targets=soft).batch(0, 0)
    np.testing.assert_allclose(b.y, 1 / 3, rtol=1e-6)
    with pytest.raises(ValueError, match="targets"):
        TrainBatches(s, rows, cfg.train, (20, 40), 0.0, n_classes=3, targets=soft[:4])


def test_the_fold_k_student_never_sees_fold_k_labels():
    from fsd.distill.student import distill_out_of_fold

    cfg = load_config("experiments/demo.yaml", TINY)
    s = store()
    t = teachers(s)
    first = distill_out_of_fold(cfg, s, {0: t[0]}, run_eagerly=True)
    fold0 = s.index["fold"].to_numpy() == 0
    assert list(first.rows) == list(np.flatnonzero(fold0))
    # fold 0's labels scrambled, and fold 0's rows of its own teacher too: the fold-0
    # student learns and predicts exactly the same
    scrambled = store()
    ids = scrambled.index["label_id"].to_numpy().copy()
    ids[fold0] = (ids[fold0] + 1) % 3
    scrambled.index["label_id"] = ids
    t0 = t[0].copy()
    t0[fold0] = t0[fold0][:, ::-1]
    again = distill_out_of_fold(cfg, scrambled, {0: t0}, run_eagerly=True)
    np.testing.assert_allclose(again.probs, first.probs, rtol=1e-5, atol=1e-6)
    # while a label of another fold does reach it
    other = store()
    ids = other.index["label_id"].to_numpy().copy()
    ids[~fold0] = (ids[~fold0] + 1) % 3
    other.index["label_id"] = ids
    changed = distill_out_of_fold(cfg, other, {0: t[0]}, run_eagerly=True)
    assert not np.allclose(changed.probs, first.probs, rtol=1e-5, atol=1e-6)
    assert 0.0 <= first.scores.overall <= 1.0 and first.scores.per_fold.keys() == {0}


def test_the_served_student_learns_every_labelled_clip():
    from fsd.distill.student import distill_served, predict_student

    cfg = load_config("experiments/demo.yaml", TINY)
    s = store()
    student = distill_served(cfg, s, teachers(s)[0], run_eagerly=True)
    assert student.model.count_params() > 0 and len(student.model.inputs) == 1  # log-mel only
    probs = predict_student(cfg, student, s, np.arange(len(s.index)))
    assert probs.shape == (24, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)
