"""A clip's answer does not depend on the rest of the request: its TTA crops are a function of the
clip only."""

from __future__ import annotations

import numpy as np


class _Net:
    """A deterministic stand-in network whose output depends on each crop's content."""

    def __init__(self, n_mels: int = 8, n_classes: int = 5, seed: int = 0):
        self.w = np.random.default_rng(seed).normal(size=(n_mels, n_classes)) * 3

    def predict_on_batch(self, x):
        z = x[..., 0].mean(axis=1) @ self.w + x[..., 0].std(axis=1) @ self.w
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _clips(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.random((int(rng.integers(20, 200)), 8)).astype(np.float32) for _ in range(n)]


def test_crops_depend_on_the_clip_only():
    from fsd.model.tta import crop_positions, predict_ensemble

    clips = _clips(12)
    a = clips[0]
    models = [_Net(seed=1), _Net(seed=2)]
    alone = predict_ensemble(models, [a], [None, None], [30, 60], 4, seed=3).probs()[0]
    for batch in ([clips[1], a], clips, clips[::-1], [a, a, clips[5]]):
        probs = predict_ensemble(models, batch, [None, None], [30, 60], 4, seed=3).probs()
        where = next(i for i, c in enumerate(batch) if c is a)
        np.testing.assert_array_equal(probs[where], alone)
    # chunked view building (small memory budget) changes nothing either
    chunked = predict_ensemble(models, clips, [None, None], [30, 60], 4, seed=3,
                               max_view_bytes=60 * 8 * 4 * 4 * 2).probs()
    np.testing.assert_array_equal(chunked, predict_ensemble(models, clips, [None, None],
                                                            [30, 60], 4, seed=3).probs())
    # positions: per clip, per length, stable under other lengths; the seed matters
    p1 = crop_positions([a], [30], 4, seed=3)
    p2 = crop_positions([clips[1], a], [60, 30], 4, seed=3)
    np.testing.assert_array_equal(p1[0, 0], p2[1, 1])
    assert not np.array_equal(p1, crop_positions([a], [30], 4, seed=4))
    assert not np.array_equal(p1[0, 0], crop_positions([clips[1]], [30], 4, seed=3)[0, 0])
