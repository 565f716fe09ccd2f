"""Batched multi-fold TTA, geometric mean and out-of-fold scoring on stand-in models (no TF)."""

from __future__ import annotations

import numpy as np
import pytest

from fsd.config import EnsembleConfig
from fsd.evaluation.metrics import map_at_k, reciprocal_ranks
from fsd.evaluation.oof import score_oof
from fsd.model.tta import (
    build_views,
    crop_positions,
    geometric_mean,
    geometric_mean_of,
    predict_ensemble,
    tta_lengths,
)


class StandIn:
    """A deterministic 'network': softmax of a linear map of time-averaged mels (+ PCA).

    Depends on the crop's content and length, so any mix-up of views shows in its output.
    """

    def __init__(self, n_mels: int, n_classes: int, pca_dim: int | None, seed: int):
        rng = np.random.default_rng(seed)
        self.w = rng.normal(size=(n_mels, n_classes)) * 3
        self.v = rng.normal(size=(pca_dim, n_classes)) if pca_dim else None
        self.inputs = [object()] * (2 if pca_dim else 1)
        self.calls: list[tuple] = []

    def predict_on_batch(self, inputs):
        x, p = (inputs if isinstance(inputs, list) else (inputs, None))
        self.calls.append(x.shape)
        z = x[..., 0].mean(axis=1) @ self.w + x.shape[1] / 100.0
        if p is not None:
            z = z + p @ self.v
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _clips(n: int, n_mels: int = 8, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((int(rng.integers(5, 60)), n_mels)).astype(np.float32) for _ in range(n)]


def test_geometric_mean_is_normalised_exp_mean_log():
    a = np.array([[0.7, 0.2, 0.1], [0.5, 0.25, 0.25]])
    b = np.array([[0.1, 0.8, 0.1], [0.5, 0.25, 0.25]])
    g = geometric_mean_of([a, b])
    want = np.sqrt(a * b)
    want /= want.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(g, want, rtol=1e-6)
    np.testing.assert_allclose(g.sum(axis=1), 1, rtol=1e-6)
    # a zero probability is floored, not -inf: the row still ranks and sums to 1
    z = geometric_mean_of([np.array([[1.0, 0.0]]), np.array([[0.5, 0.5]])])
    assert np.isfinite(z).all() and z[0, 0] > z[0, 1]
    # a row no view scored stays uniform
    np.testing.assert_allclose(geometric_mean(np.zeros((1, 4)), np.array([0])), 0.25)


def test_tta_lengths_from_crop_limits_or_config():
    cfg = EnsembleConfig(tta_n_lengths=6)
    assert tta_lengths(cfg, 263, 763) == [263, 363, 463, 563, 663, 763]
    assert tta_lengths(EnsembleConfig(tta_lengths=[100, 50]), 263, 763) == [100, 50]
    assert tta_lengths(EnsembleConfig(tta_n_lengths=1), 100, 200) == [150]
    with pytest.raises(ValueError):
        tta_lengths(cfg, 0, 0)


def test_views_crop_long_and_pad_short_clips():
    long, short = np.arange(20.0).reshape(10, 2), np.ones((3, 2))
    pos = crop_positions([long, short], [6], 3, seed=1)[0]
    v = build_views([long, short], 6, pos)
    assert v.shape == (6, 6, 2, 1)
    for c in range(3):
        crop = v[c, :, :, 0]
        start = int(crop[0, 0]) // 2
        np.testing.assert_array_equal(crop, long[start:start + 6])
        padded = v[3 + c, :, :, 0]
        assert padded.sum() == short.sum() and padded[:, 0].tolist().count(1.0) == 3


def test_folds_batched_equal_the_naive_loop():
    """All folds x lengths x crops batched == one prediction per (fold, clip, length, crop)."""
    clips = _clips(9)
    rng = np.random.default_rng(1)
    models = [StandIn(8, 4, 3, seed=s) for s in (1, 2)]
    pcas = [rng.normal(size=(9, 3)).astype(np.float32) for _ in models]
    lengths, crops = [12, 30], 4
    res = predict_ensemble(models, clips, pcas, lengths, crops, seed=7, batch_size=64)
    pos = crop_positions(clips, lengths, crops, seed=7)
    logs = []
    for m, pca in zip(models, pcas):
        for li, length in enumerate(lengths):
            for c in range(crops):
                for i, clip in enumerate(clips):
                    x = build_views([clip], length, pos[li, i:i + 1, c:c + 1])
                    logs.append((i, np.log(m.predict_on_batch([x, pca[i:i + 1]])[0])))
    want = np.zeros((9, 4))
    for i, lp in logs:
        want[i] += lp
    np.testing.assert_allclose(res.log_sum, want, rtol=1e-5)
    assert (res.count == 2 * 2 * 4).all()
    # one forward call per (fold, length): every crop of every clip in one batch
    assert [len(m.calls) for m in models] == [2 + 9 * 2 * 4] * 2  # batched + the naive loop


def test_members_restrict_each_model_to_its_clips():
    clips = _clips(6)
    models = [StandIn(8, 3, None, seed=s) for s in (3, 4)]
    members = [np.array([0, 2, 4]), np.array([1, 3, 5])]
    res = predict_ensemble(models, clips, [None, None], [20], 2, members=members)
    alone0 = predict_ensemble(models[:1], [clips[i] for i in members[0]], [None], [20], 2)
    assert (res.count == 2).all()
    # crop positions are drawn for all clips, so compare with the same positions via log sums
    assert res.log_sum.shape == (6, 3) and alone0.log_sum.shape == (3, 3)
    assert len(models[0].calls) == 2 and len(models[1].calls) == 1
    assert models[0].calls[0][0] == 3 * 2 and models[1].calls[0][0] == 3 * 2


def test_large_sets_are_built_in_chunks_with_the_same_result():
    clips = _clips(10)
    m = StandIn(8, 3, None, seed=5)
    whole = predict_ensemble([m], clips, [None], [30], 3, seed=2)
    chunked = predict_ensemble([m], clips, [None], [30], 3, seed=2, max_view_bytes=30 * 8 * 4 * 3 * 3)
    np.testing.assert_allclose(whole.log_sum, chunked.log_sum, rtol=1e-6)


def test_oof_scores_per_fold_and_class():
    labels = ["a", "b", "c"]
    y = np.array([0, 0, 1, 2, 2, 1])
    folds = np.array([0, 0, 0, 1, 1, 1])
    probs = np.array([[.6, .3, .1], [.3, .6, .1], [.1, .2, .7], [.1, .2, .7], [.7, .2, .1],
                      [.2, .5, .3]])
    s = score_oof([f"f{i}" for i in range(6)], y, folds, probs, labels)
    rr = reciprocal_ranks(y, probs)
    np.testing.assert_allclose(rr, [1, .5, .5, 1, 1 / 3, 1])
    assert s.overall == pytest.approx(map_at_k(y, probs, 3))
    assert s.per_fold == pytest.approx({0: (1 + .5 + .5) / 3, 1: (1 + 1 / 3 + 1) / 3})
    assert s.per_class == pytest.approx({"a": .75, "b": (.5 + 1) / 2, "c": (1 + 1 / 3) / 2})
    m = s.metrics()
    assert m["oof_map3"] == s.overall and "tta/fold_1_map3" in m and "tta_class_map3/b" in m
    assert s.metrics(group="oof")["oof/fold_1_map3"] == m["tta/fold_1_map3"]
    assert not any("class" in k for k in s.metrics(group="cnn", per_class=False))
    assert s.fold_metrics("cnn") == {"cnn/fold_0_map3": s.per_fold[0], "cnn/fold_1_map3": s.per_fold[1],
                                     "cnn/fold_0_accuracy": s.per_fold_accuracy[0],
                                     "cnn/fold_1_accuracy": s.per_fold_accuracy[1]}
    assert s.frame["pred_1"].tolist()[:2] == ["a", "b"]


def test_lazy_clip_rows_give_the_same_scores():
    from fsd.model.tta import ClipRows

    clips = _clips(8)
    fetched = []

    def fetch(i):
        fetched.append(i)
        return clips[i].astype(np.float16)  # as a float16 store hands them out

    m = StandIn(8, 3, None, seed=6)
    eager = predict_ensemble([m], [c.astype(np.float16).astype(np.float32) for c in clips],
                             [None], [15, 30], 2, seed=1)
    lazy = predict_ensemble([m], ClipRows(fetch, range(8)), [None], [15, 30], 2, seed=1)
    np.testing.assert_allclose(lazy.log_sum, eager.log_sum, rtol=1e-6)
    assert set(fetched) == set(range(8))
