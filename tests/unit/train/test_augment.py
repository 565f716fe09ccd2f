"""Each augmentation does what the recipe says, on hand-checkable inputs."""

from __future__ import annotations

import numpy as np
import pytest

from fsd.train.augment import erase_boxes, mixup, random_erase, shift_flip_index, time_flip, time_shift


def frames_batch(b: int = 16, t: int = 50, m: int = 8) -> np.ndarray:
    """x[b, t, :] = t + 1: every frame says where it came from."""
    return np.broadcast_to(np.arange(1, t + 1, dtype=np.float32)[None, :, None], (b, t, m)).copy()


def test_flip_reverses_time():
    x = frames_batch()
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(time_flip(x, 1.0, rng), x[:, ::-1])
    np.testing.assert_array_equal(time_flip(x, 0.0, rng), x)
    flipped = (time_flip(x, 0.5, np.random.default_rng(1))[:, 0, 0] == 50).mean()
    assert 0 < flipped < 1


def test_shift_fills_with_the_nearest_frame():
    x = frames_batch(b=64, t=100)
    out = time_shift(x, 0.6, np.random.default_rng(0))
    assert out.shape == x.shape
    shifts = []
    for row in out[:, :, 0]:
        # out[t] = x[clip(t - s)]: a leading run of frame 1 (s > 0) or a late start (s < 0)
        s = int((row == 1).sum() - 1) if row[0] == 1 else -int(row[0] - 1)
        expected = np.clip(np.arange(100) - s, 0, 99) + 1
        np.testing.assert_array_equal(row, expected)
        shifts.append(s)
    shifts = np.array(shifts)
    assert np.abs(shifts).max() <= 60
    assert (shifts > 0).any() and (shifts < 0).any()


def test_shift_and_flip_compose():
    idx = shift_flip_index(4, 10, 0.0, 1.0, np.random.default_rng(0))
    np.testing.assert_array_equal(idx, np.tile(np.arange(9, -1, -1), (4, 1)))


def test_erasing_really_changes_the_input():
    x = np.zeros((32, 200, 64), dtype=np.float32) - 1.0
    out = random_erase(x.copy(), 1.0, (0.02, 0.4), (0.3, 3.33), np.random.default_rng(0))
    for row in out:
        erased = row != -1.0
        assert erased.any(), "every clip must be erased at p=1"
        ts, ms = np.nonzero(erased)
        h, w = ts.max() - ts.min() + 1, ms.max() - ms.min() + 1
        assert erased.sum() == h * w  # one rectangle
        assert len(np.unique(row[erased])) == 1  # one value
        assert 0 <= row[erased][0] <= 1
        area = h * w / row.size
        assert 0.02 * 0.5 <= area <= 0.4  # int() truncation can shave a little off the minimum
    untouched = random_erase(x.copy(), 0.0, (0.02, 0.4), (0.3, 3.33), np.random.default_rng(0))
    np.testing.assert_array_equal(untouched, x)
    half = random_erase(x.copy(), 0.5, (0.02, 0.4), (0.3, 3.33), np.random.default_rng(3))
    share = (half != -1).any(axis=(1, 2)).mean()
    assert 0.2 < share < 0.8


def test_erase_boxes_fit_the_image():
    boxes = erase_boxes(500, 300, 64, (0.02, 0.4), (0.3, 3.33), np.random.default_rng(0))
    top, left, h, w = boxes.T
    assert (top + h <= 300).all() and (left + w <= 64).all() and (h > 0).all() and (w > 0).all()


def test_mixup_mixes_inputs_pca_labels_and_weights_alike():
    b = 32
    ids = np.arange(b, dtype=np.float32)
    x = np.broadcast_to(ids[:, None, None], (b, 5, 3)).copy()
    pca = 10 * ids[:, None].repeat(4, axis=1)
    y = np.eye(b, dtype=np.float32)
    w = 1 + ids
    (xm, pm, ym, wm), lam = mixup([x, pca, y, w], 1.0, np.random.default_rng(0))
    assert not np.allclose(ym, y)
    np.testing.assert_allclose(ym.sum(axis=1), 1, rtol=1e-6)
    for i in range(b):
        nz = np.flatnonzero(ym[i] > 1e-7)
        assert 1 <= len(nz) <= 2
        mixed_id = float((ym[i] * np.arange(b)).sum())  # lam * i + (1 - lam) * j
        np.testing.assert_allclose(xm[i], mixed_id, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(pm[i], 10 * mixed_id, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(wm[i], 1 + mixed_id, rtol=1e-5, atol=1e-5)
        assert ym[i, i] == pytest.approx(lam[i], abs=1e-6) or len(nz) == 1
    assert 0 < lam.min() and lam.max() < 1


def test_mixup_alpha_zero_and_none_arrays():
    x = np.ones((4, 3), dtype=np.float32)
    (xm, none), lam = mixup([x, None], 0.0, np.random.default_rng(0))
    assert xm is x and none is None and (lam == 1).all()
    (xm, none), _ = mixup([x, None], 0.5, np.random.default_rng(0))
    assert none is None and xm.dtype == np.float32


def test_spec_augment_masks_bands_with_the_clip_mean():
    from fsd.train.augment import band_mask, spec_augment

    rng = np.random.default_rng(0)
    m = band_mask(500, 64, 2, 8, rng)
    widths = m.sum(axis=1)
    assert widths.max() <= 16 and widths.min() >= 0 and widths.mean() > 2
    for row in m[:50]:  # each band is contiguous: at most 2 runs of True
        assert np.count_nonzero(np.diff(row.astype(int)) == 1) + row[0] <= 2
    x = rng.random((4, 100, 64), dtype=np.float32)
    before = x.copy()
    means = before.mean(axis=(1, 2))
    spec_augment(x, 2, 10, 2, 20, np.random.default_rng(1))
    changed = x != before
    assert changed.any()
    for b in range(4):
        np.testing.assert_allclose(x[b][changed[b]], means[b], rtol=1e-6)
        cols = changed[b].all(axis=0)  # masked mel bands span every frame
        rows = changed[b].all(axis=1)  # masked frames span every band
        assert (changed[b] == (cols[None, :] | rows[:, None])).all()
    y = before.copy()
    spec_augment(y, 0, 10, 0, 20, rng)
    np.testing.assert_array_equal(y, before)
