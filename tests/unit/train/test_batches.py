"""Training batches: crop/pad, bounded shapes, weights, reproducibility, prefetch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fsd.config import TrainConfig
from fsd.train.batches import (
    MemoryStore,
    TrainBatches,
    balanced_class_weights,
    crop_lengths,
    prefetch,
    resolve_crop_limits,
    sample_weights,
)


def ramp_store(lengths: list[int], labels: list[int] | None = None,
               verified: list[bool] | None = None, n_mels: int = 8) -> MemoryStore:
    """Clips whose frame t holds t + 1 (so crops and pads can be read back)."""
    n = len(lengths)
    labels = labels if labels is not None else [i % 2 for i in range(n)]
    logmels = [np.broadcast_to(np.arange(1, k + 1, dtype=np.float32)[:, None], (k, n_mels)).copy()
               for k in lengths]
    index = pd.DataFrame({"fname": [f"c{i}" for i in range(n)], "label": [f"l{c}" for c in labels],
                          "label_id": labels, "fold": [i % 2 for i in range(n)],
                          "verified": verified if verified is not None else [True] * n,
                          "offset": 0, "frames": lengths, "seconds": 0.0})
    return MemoryStore(index, [f"l{c}" for c in range(max(labels) + 1)], logmels,
                       np.zeros((n, 5), dtype=np.float32), {"crop_min": 20, "crop_max": 40})


def plain_cfg(**kw) -> TrainConfig:
    """No augmentation: what comes out is exactly the crop or the padded clip."""
    base = dict(batch_size=4, time_shift=0.0, flip_prob=0.0, erase_prob=0.0, crop_bucket=1)
    base.update(kw)
    return TrainConfig(**base)


def test_long_clips_are_cropped_short_clips_padded():
    store = ramp_store([100, 100, 10, 10])
    ds = TrainBatches(store, np.arange(4), plain_cfg(), (30, 31), 0.0)
    b = ds.batch(0)
    assert b.x.shape == (4, 30, 8, 1)
    order = ds._order(0)[:4]
    for row, clip in zip(b.x[:, :, 0, 0], order):
        if store.index.frames[clip] == 100:  # a contiguous window of the clip
            assert (np.diff(row) == 1).all() and 1 <= row[0] <= 71
        else:  # the whole clip at some offset, zeros around it
            nz = np.flatnonzero(row)
            np.testing.assert_array_equal(row[nz], np.arange(1, 11))
            assert (np.diff(nz) == 1).all()
    offsets = {int(np.flatnonzero(ds.batch(s, e).x[j, :, 0, 0])[0]) for e in range(5)
               for s in range(1) for j in range(4) if ds.frames[ds._order(e)[j]] == 10}
    assert len(offsets) > 1, "padding offsets should be random"


def test_crop_lengths_are_bucketed_and_shapes_bounded():
    assert crop_lengths(263, 763, 25).tolist() == list(range(275, 763, 25))
    assert crop_lengths(30, 34, 25).tolist() == [30, 31, 32, 33]
    store = ramp_store([50] * 8)
    ds = TrainBatches(store, np.arange(8), plain_cfg(crop_bucket=5), (20, 40), 0.0)
    for e in range(10):
        for s in range(len(ds)):
            ds.batch(s, e)
    lengths = sorted({s[1] for s in ds.shapes})
    assert set(lengths) <= {20, 25, 30, 35}
    assert len(lengths) >= 3
    assert {s[0] for s in ds.shapes} == {4}, "the batch dimension never changes"


def test_crop_limits_come_from_config_or_store():
    frames = np.arange(100)
    assert resolve_crop_limits(TrainConfig(), {"crop_min": 263, "crop_max": 763}, frames) == (263, 763)
    assert resolve_crop_limits(TrainConfig(crop_min=10, crop_max=20), {"crop_min": 263}, frames) == (10, 20)
    assert resolve_crop_limits(TrainConfig(), {}, frames) == (24, 74)


def test_class_weights_and_unverified_weights_reach_the_batches():
    labels = [0] * 6 + [1] * 2
    verified = [True, False] + [True] * 6
    w = sample_weights(np.array(labels), np.array(verified), 2, True, 0.0)
    np.testing.assert_allclose(balanced_class_weights(np.array(labels), 2), [8 / 12, 8 / 4])
    np.testing.assert_allclose(w, [8 / 12, 0] + [8 / 12] * 4 + [2, 2])
    store = ramp_store([50] * 8, labels=labels, verified=verified)
    ds = TrainBatches(store, np.arange(8), plain_cfg(class_weights=True, unverified_weight=0.0,
                                                    batch_size=8), (20, 21), 0.0)
    _, y, bw = ds[0]
    expected = np.where(np.array(verified)[ds._order(0)], 1.0, 0.0) * np.where(
        y.argmax(axis=1) == 0, 8 / 12, 2.0)
    np.testing.assert_allclose(bw, expected, rtol=1e-6)
    off = TrainBatches(store, np.arange(8), plain_cfg(batch_size=8), (20, 21), 0.0)
    np.testing.assert_array_equal(off[0][2], np.ones(8))


def test_mixup_in_batches_mixes_labels_and_pca():
    store = ramp_store([50] * 8)
    pca = np.arange(8, dtype=np.float32)[:, None].repeat(3, axis=1)
    ds = TrainBatches(store, np.arange(8), plain_cfg(batch_size=8), (20, 21), 1.0, pca=pca)
    b = ds.batch(0)
    assert b.pca.shape == (8, 3)
    assert ((b.y > 0) & (b.y < 1)).any()
    inputs, _, _ = ds[0]
    assert isinstance(inputs, list) and len(inputs) == 2


def test_batches_are_reproducible_and_differ_between_epochs():
    store = ramp_store([30, 60, 90, 120, 15, 45, 75, 105])
    cfg = TrainConfig(batch_size=4, crop_bucket=5)
    a = TrainBatches(store, np.arange(8), cfg, (20, 40), 1.0, seed=3)
    b = TrainBatches(store, np.arange(8), cfg, (20, 40), 1.0, seed=3)
    np.testing.assert_array_equal(a.batch(1, 2).x, b.batch(1, 2).x)
    np.testing.assert_array_equal(a.batch(1, 2).y, b.batch(1, 2).y)
    assert not np.array_equal(a.batch(0, 0).y, a.batch(0, 1).y)
    c = TrainBatches(store, np.arange(8), cfg, (20, 40), 1.0, seed=4)
    assert not np.array_equal(a.batch(0, 0).y, c.batch(0, 0).y)


def test_erasing_is_applied_in_the_pipeline():
    store = ramp_store([50] * 8)
    on = TrainBatches(store, np.arange(8), plain_cfg(erase_prob=1.0, batch_size=8), (20, 21), 0.0)
    off = TrainBatches(store, np.arange(8), plain_cfg(batch_size=8), (20, 21), 0.0)
    x_on, x_off = on.batch(0).x, off.batch(0).x
    assert (x_on != x_off).any(axis=(1, 2, 3)).all()


def test_an_epoch_covers_every_clip_and_wraps_to_full_batches():
    store = ramp_store([50] * 10)
    ds = TrainBatches(store, np.arange(10), plain_cfg(), (20, 21), 0.0)
    assert len(ds) == 3
    order = ds._order(0)
    assert len(order) == 12 and set(order) == set(range(10))


def test_prefetch_matches_direct_batches_and_reraises():
    store = ramp_store([50] * 8)
    ds = TrainBatches(store, np.arange(8), TrainConfig(batch_size=2), (20, 30), 1.0)
    got = [b.x for b in prefetch(ds, epoch=1, start=1)]
    assert len(got) == 3
    for i, x in enumerate(got, start=1):
        np.testing.assert_array_equal(x, ds.batch(i, 1).x)

    class Broken(MemoryStore):
        def logmel(self, i: int) -> np.ndarray:
            raise OSError("shard missing")

    bad = TrainBatches(Broken(store.index, store.labels, store.logmels, store.summary),
                       np.arange(8), TrainConfig(batch_size=2), (20, 30), 1.0)
    with pytest.raises(OSError, match="shard missing"):
        list(prefetch(bad, 0))


def test_min_steps_per_epoch_gives_small_data_enough_updates():
    store = ramp_store([50] * 10)
    assert len(TrainBatches(store, np.arange(10), plain_cfg(), (30, 31), 0.0)) == 3
    ds = TrainBatches(store, np.arange(10), plain_cfg(min_steps_per_epoch=25), (30, 31), 0.0)
    assert len(ds) == 25
    seen = np.bincount(ds._order(0), minlength=10)
    assert seen.min() >= 9 and seen.max() <= 11  # whole shuffled passes, wrapped
    big = TrainBatches(ramp_store([50] * 400), np.arange(400), plain_cfg(min_steps_per_epoch=25),
                       (30, 31), 0.0)
    assert len(big) == 100  # one pass is already more


def test_spec_augment_is_applied_in_the_pipeline():
    store = ramp_store([100] * 8)
    ds = TrainBatches(store, np.arange(8), plain_cfg(freq_masks=1, freq_mask_max=4), (60, 61), 0.0)
    x = ds.batch(0).x[..., 0]
    # a ramp has equal values across mel bands; a masked band holds the clip mean instead
    masked = ~np.isclose(x, x[:, :, :1]).all(axis=1)
    assert masked.any()
