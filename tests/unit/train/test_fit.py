"""The schedule, and train_fold's early errors (before anything trains)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny_schedule import TINY_FOLD, tiny_store

from fsd.config import StageConfig, load_config
from fsd.train.batches import MemoryStore
from fsd.train.fit import TrainError, train_fold
from fsd.train.schedule import PlateauState, stage_phases, triangular_lr


def test_triangular_lr_values():
    lrs = [triangular_lr(i, 4, 1e-4, 1e-3) for i in range(13)]
    expected = [1e-4, 3.25e-4, 5.5e-4, 7.75e-4, 1e-3, 7.75e-4, 5.5e-4, 3.25e-4, 1e-4,
                3.25e-4, 5.5e-4, 7.75e-4, 1e-3]
    np.testing.assert_allclose(lrs, expected, rtol=1e-9)


def test_phases_follow_the_stage_config():
    phases = stage_phases(StageConfig())
    assert [(p.name, p.max_epochs, p.lr, p.cyclic) for p in phases] == [
        ("A", 100, 1e-4, True), ("B", 100, 1e-5, False), ("C", 100, 1e-4, False)]
    assert phases[0].lr_max == 1e-3
    assert [p.name for p in stage_phases(StageConfig(plateau_low_epochs=0))] == ["A", "C"]


def test_plateau_reduces_lr_and_stops_like_keras():
    p = PlateauState(stop_patience=4, lr_patience=2, factor=0.1, lr=1e-4)
    losses = [1.0, 0.9, 0.95, 0.93, 0.91, 0.92, 0.8]
    out = [(p.update(v), p.lr) for v in losses]
    # epochs 3 and 4 without improvement -> lr x0.1 after epoch 4 (index 3); again after 5, 6
    assert [s for s, _ in out] == [False, False, False, False, False, True, False]
    np.testing.assert_allclose([lr for _, lr in out],
                               [1e-4, 1e-4, 1e-4, 1e-5, 1e-5, 1e-6, 1e-6])
    assert PlateauState.from_dict(p.to_dict()) == p


def test_errors_come_before_training(tmp_path):
    cfg = load_config(None, TINY_FOLD)
    store = tiny_store()
    with pytest.raises(TrainError, match=r"fold 5 is not a fold .*\[0, 1\]"):
        train_fold(cfg, store, 5, tmp_path / "a", progress=False)
    no_summary = MemoryStore(store.index, store.labels, store.logmels, None, store.meta)
    with pytest.raises(TrainError, match="summary"):
        train_fold(cfg, no_summary, 0, tmp_path / "b", progress=False)
    ck = tmp_path / "c" / "checkpoint"
    ck.mkdir(parents=True)
    (ck / "state.json").write_text(json.dumps({"version": 1, "fold": 0, "labels": ["x"] * 41}))
    with pytest.raises(TrainError, match="41 classes but the feature store has 3"):
        train_fold(cfg, store, 0, tmp_path / "c", progress=False)
    assert not (tmp_path / "c" / "projector.joblib").exists()
