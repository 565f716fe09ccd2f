"""Batches read straight from a memory-mapped store equal those built from whole-clip copies."""

from __future__ import annotations

import numpy as np

from fsd.config import TrainConfig
from fsd.features.store import FeatureStore
from fsd.train.batches import MemoryStore, TrainBatches


def test_windowed_reads_from_the_map_give_the_same_batches(tmp_path):
    base = MemoryStore.random(n_clips=40, frames=(5, 400), n_mels=16, summary_dim=3, seed=3)
    rows16 = np.concatenate([m.astype(np.float16) for m in base.logmels])
    np.save(tmp_path / "logmel.npy", rows16)
    mapped = np.load(tmp_path / "logmel.npy", mmap_mode="r")
    index = base.index.assign(ok=True)
    store = FeatureStore(tmp_path, "train", {"labels": base.labels}, index, mapped, base.summary)
    # the whole-clip path on the same float16 values
    copies = MemoryStore(base.index, base.labels, [store.logmel(i) for i in range(len(index))],
                         base.summary)
    cfg = TrainConfig(batch_size=8, crop_bucket=1, time_shift=0.2, flip_prob=0.5, erase_prob=0.5,
                      freq_masks=1, time_masks=1)
    rows = np.arange(40)
    a = TrainBatches(store, rows, cfg, (20, 200), 0.4, seed=5)
    b = TrainBatches(copies, rows, cfg, (20, 200), 0.4, seed=5)
    assert a._mm is not None and b._mm is None
    for step in range(len(a)):
        ba, bb = a.batch(step, 1), b.batch(step, 1)
        np.testing.assert_array_equal(ba.x, bb.x)
        np.testing.assert_array_equal(ba.y, bb.y)
        np.testing.assert_array_equal(ba.w, bb.w)
