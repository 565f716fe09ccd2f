"""The TTA scoring in shards (fsd.ensemble.shards): clip ranges with their members, gathered
in clip order, and equal to the unsharded scoring (stand-in networks, no Ray, no TensorFlow)."""

from __future__ import annotations

import numpy as np

from fsd.ensemble.shards import LocalShards, gather, score_sharded, split_shards
from fsd.model.tta import TTAResult


def test_shards_are_contiguous_clip_ranges_with_relative_members():
    rows = np.arange(100, 110)
    members = [np.array([0, 3, 4, 9]), np.array([1, 2, 5, 6, 7, 8])]
    shards = split_shards("train", rows, members, 3)
    assert [(s.start, s.stop) for s in shards] == [(0, 3), (3, 7), (7, 10)]
    assert np.concatenate([s.rows for s in shards]).tolist() == rows.tolist()
    for s in shards:  # each member position maps back to the same clip
        for k, m in enumerate(s.members):
            assert set((m + s.start).tolist()) == {p for p in members[k] if s.start <= p < s.stop}
    assert len(split_shards("test", rows[:2], None, 5)) == 2  # never an empty shard
    # gathered in clip order whatever order the results are listed in
    res = [TTAResult(np.full((len(s.rows), 2), s.start, float), np.ones(len(s.rows), int))
           for s in shards]
    back = gather(res[::-1], shards[::-1])
    assert back.log_sum[:, 0].tolist() == [0] * 3 + [3] * 4 + [7] * 3


def test_sharded_scoring_equals_unsharded_with_stand_in_networks():
    from unit.ensemble.test_ensemble import StandIn

    class Store:  # the two things score_shard reads of a feature store
        def __init__(self, clips, summary):
            self.clips, self.summary = clips, summary

        def logmel(self, i):
            return self.clips[i]

    rng = np.random.default_rng(3)
    clips = [rng.random((int(rng.integers(5, 60)), 8)).astype(np.float32) for _ in range(23)]
    models = [StandIn(8, 4, None, seed=s) for s in (1, 2)]

    class Ens:
        labels = ["a", "b", "c", "d"]

        def score(self, logmels, summaries, members=None):
            from fsd.model.tta import predict_ensemble

            return predict_ensemble(models, logmels, [None, None], [20, 40], 3, seed=5,
                                    members=members)

    store = Store(clips, np.zeros((23, 1)))
    rows = np.arange(23)
    members = [rows[rows % 2 == 0], rows[(rows % 2 == 1) & (rows < 15)]]  # 16..22 odd: no fold
    whole = score_sharded(LocalShards(Ens(), store, False), "train", rows, members)
    for n in (2, 5, 23):
        parts = score_sharded(LocalShards(Ens(), store, False, shards=n), "train", rows, members)
        np.testing.assert_array_equal(parts.count, whole.count)
        np.testing.assert_array_equal(parts.log_sum, whole.log_sum)
