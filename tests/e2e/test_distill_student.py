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


def test_unlabeled_clips_train_the_fold_k_student_and_fold_k_labels_still_never_reach_it():
    """With the test split pooled in (distill.unlabeled: test), fold 0's student learns from
    its teacher's targets on the unlabeled clips, and still nothing of fold 0's labels (nor
    the test split's own labels) changes what it learns or predicts."""
    from fsd.distill.pool import StudentPool
    from fsd.distill.student import distill_out_of_fold

    cfg = load_config("experiments/demo.yaml", TINY)

    def pooled(fold0_shift: int = 0, test_shift: int = 0) -> StudentPool:
        s, test = store(), MemoryStore.random(n_clips=12, n_classes=3, n_folds=1,
                                              frames=(20, 60), n_mels=8, summary_dim=4, seed=5)
        fold0 = s.index["fold"].to_numpy() == 0
        s.index.loc[fold0, "label_id"] = (s.index.loc[fold0, "label_id"] + fold0_shift) % 3
        test.index["label_id"] = (test.index["label_id"] + test_shift) % 3
        return StudentPool(s, test)

    pool = pooled()
    extra = pool.unlabeled_rows
    assert len(extra) == 12 and (pool.index["fold"].to_numpy()[extra] == -1).all()
    rng = np.random.default_rng(0)
    teacher = rng.random((len(pool.index), 3)).astype(np.float32)
    teacher /= teacher.sum(axis=1, keepdims=True)
    first = distill_out_of_fold(cfg, pool, {0: teacher}, run_eagerly=True)
    fold0 = pool.index["fold"].to_numpy() == 0
    assert list(first.rows) == list(np.flatnonzero(fold0))  # nothing scored on the test clips
    # fold 0's labels and its rows of the teacher scrambled, the test split's labels too:
    # the same student, the same answers
    t0 = teacher.copy()
    t0[fold0] = t0[fold0][:, ::-1]
    again = distill_out_of_fold(cfg, pooled(fold0_shift=1, test_shift=1), {0: t0},
                                run_eagerly=True)
    np.testing.assert_allclose(again.probs, first.probs, rtol=1e-5, atol=1e-6)
    # while the teacher's targets on the unlabeled clips do reach it
    t1 = teacher.copy()
    t1[extra] = t1[extra][:, ::-1]
    moved = distill_out_of_fold(cfg, pooled(), {0: t1}, run_eagerly=True)
    assert not np.allclose(moved.probs, first.probs, rtol=1e-5, atol=1e-6)
