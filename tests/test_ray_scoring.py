"""The ensemble's TTA scoring in shards on Ray actors (fsd.cluster.scoring) against the local,
unsharded scoring: a real 2-node Ray cluster on loopback, the tiny trained ensemble of
tests/conftest_ensemble.py. The shard logic alone (no Ray, no TensorFlow) is checked with
stand-in networks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from raycluster import local_cluster, node_addresses

from fsd.ensemble.shards import LocalShards, gather, score_sharded, split_shards
from fsd.model.tta import TTAResult

pytest_plugins = ["conftest_ensemble"]


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
    from test_ensemble import StandIn

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


@pytest.mark.slow
def test_tta_shards_on_ray_actors_equal_local_scoring(trained_ensemble, tmp_path):
    """OOF and test scoring on 2 actors on 2 nodes == the local, unsharded scoring, bit for
    bit; then the ensemble step with cluster.executor=ray scores what the local one did."""
    from conftest_ensemble import tracking_at

    from fsd import tracking
    from fsd.cluster.scoring import ray_scorer
    from fsd.ensemble.stage import FoldModel, assemble, score_out_of_fold, score_test
    from fsd.entrypoints.ensemble import build_ensemble, select_fold_runs
    from fsd.tracking.artifacts import FOLD_ARTIFACT
    from fsd.tracking.lookups import training_config
    from fsd.train.folddir import FoldDir

    te = trained_ensemble
    with tracking_at(te.uri), local_cluster(nodes=2, cpus_per_node=1) as cluster:
        runs = select_fold_runs(te.cfg, None)
        first = next(iter(runs.values()))
        train_cfg = training_config(te.cfg, first)
        store, features_run = tracking.resolve_store(
            train_cfg, first.data.tags[tracking.TAG_FEATURES_RUN])
        folds = [FoldModel(fold=k, run_id=r.info.run_id, files=FoldDir(tracking.download_artifacts(
            r.info.run_id, FOLD_ARTIFACT, tmp_path / "dl" / r.info.run_id)))
            for k, r in runs.items()]
        info, _, ensemble, bundle = assemble(train_cfg, store, folds, tmp_path / "bundle")
        ws = train_cfg.summary.enabled
        local_oof = score_out_of_fold(ensemble, store, ws)
        local_test = score_test(store, ensemble, info, ws)

        cfg = dataclasses.replace(te.cfg, cluster=dataclasses.replace(
            te.cfg.cluster, executor="ray", address=cluster.address, scoring_actors=2,
            cpus_per_fold=1))
        shard_map = ray_scorer(cfg, train_cfg, features_run)(bundle, ensemble)
        try:
            assert node_addresses() == {"127.0.0.1"}
            assert len(set(shard_map.nodes())) == 2, "the actors did not spread over both nodes"
            ray_oof = score_out_of_fold(ensemble, store, ws, shard_map)
            ray_test = score_test(store, ensemble, info, ws, shard_map)
        finally:
            shard_map.close()
        assert ray_oof.names == local_oof.names
        np.testing.assert_array_equal(ray_oof.probs, local_oof.probs)
        assert ray_oof.scores.overall == local_oof.scores.overall
        assert ray_test.probabilities["fname"].tolist() == local_test.probabilities["fname"].tolist()
        np.testing.assert_array_equal(ray_test.probabilities.iloc[:, 1:].to_numpy(),
                                      local_test.probabilities.iloc[:, 1:].to_numpy())
        assert ray_test.submission.equals(local_test.submission)

        # the ensemble step itself, in an experiment of its own (the session's stays as it was)
        cfg = dataclasses.replace(cfg, tracking=dataclasses.replace(
            cfg.tracking, experiment="ray-scoring"))
        summary = build_ensemble(cfg, te.fold_run_ids, register=False)
    for key in ("oof_map3", "cnn_oof_map3", "public_map3", "private_map3"):
        assert summary[key] == te.summary[key], key
