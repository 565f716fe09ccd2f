"""The ensemble's TTA scoring in shards on Ray actors (fsd.cluster.scoring) against the local,
unsharded scoring: a real 2-node Ray cluster on loopback (tests/support/raycluster.py, shared
with this folder's other modules: conftest.py), the tiny trained ensemble of
tests/support/conftest_ensemble.py. Without Ray it skips; under FSD_REQUIRE_DISTRIBUTED=1 that
is a failure instead."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from raycluster import driver_session, node_addresses

pytestmark = [pytest.mark.e2e, pytest.mark.distributed, pytest.mark.slow]


def test_tta_shards_on_ray_actors_equal_local_scoring(trained_ensemble, ray_cluster, tmp_path):
    """OOF and test scoring on 2 actors on 2 nodes == the local, unsharded scoring, bit for
    bit; then the ensemble step with cluster.executor=ray scores what the local one did."""
    from conftest_ensemble import tracking_at

    from fsd import tracking
    from fsd.cluster.scoring import ray_scorer
    from fsd.ensemble.stage import assemble, score_out_of_fold, score_test
    from fsd.entrypoints.ensemble import _download_folds, build_ensemble, select_fold_runs
    from fsd.tracking.lookups import training_config

    te = trained_ensemble
    cluster = ray_cluster
    # the scorer joins the cluster itself (fsd.cluster.runtime.connect); it leaves after the test
    with tracking_at(te.uri), driver_session():
        runs = select_fold_runs(te.cfg, None)
        first = next(iter(runs.values()))
        train_cfg = training_config(te.cfg, first)
        store, features_run = tracking.resolve_store(
            train_cfg, first.data.tags[tracking.TAG_FEATURES_RUN])
        folds = _download_folds(runs, tmp_path / "dl")
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
