"""A fold trained end to end, interrupted and resumed; a fold on a featurized store."""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import pandas as pd
import pytest
from tiny_schedule import TINY_FOLD, tiny_store

from fsd.config import load_config
from fsd.evaluation.metrics import map_at_k
from fsd.train.fit import train_fold

pytestmark = pytest.mark.e2e


class Interrupt(Exception):
    pass


def test_train_fold_end_to_end_with_interruption_and_resume(tmp_path):
    cfg = load_config(None, TINY_FOLD)
    store = tiny_store()
    wd = tmp_path / "fold0"
    calls: list[tuple[str, int, dict]] = []

    def stop_after_first(stage, epoch, metrics):
        calls.append((stage, epoch, metrics))
        raise Interrupt  # an Optuna pruner, a kill: after the epoch's checkpoint

    with pytest.raises(Interrupt):
        train_fold(cfg, store, 0, wd, on_epoch=stop_after_first, progress=False, run_eagerly=True)
    assert [(s, e) for s, e, _ in calls] == [("stage1", 0)]
    assert set(calls[0][2]) == {"loss", "val_loss", "val_map3", "val_accuracy", "lr"}
    state = json.loads((wd / "checkpoint" / "state.json").read_text())
    assert (state["stage"], state["stage_epoch"], state["phase"], state["phase_epoch"]) == (
        "stage1", 1, 0, 1)
    with np.load(wd / "checkpoint" / state["snapshot"] / "optimizer.npz") as z:
        assert int(z["arr_0"]) == 1  # Adam's step counter (8 clips = 1 step), kept for resume
    first_row = pd.read_csv(wd / "history.csv").iloc[0]

    resumed: list[tuple[str, int]] = []
    result = train_fold(cfg, store, 0, wd, on_epoch=lambda s, e, m: resumed.append((s, e)),
                        progress=False, run_eagerly=True)
    # continues with the second epoch of stage 1's phase A, redoes nothing
    assert resumed == [("stage1", 1), ("stage1", 2), ("stage2", 0), ("stage2", 1)]
    hist = result.history
    assert list(hist.columns) == ["stage", "phase", "epoch", "loss", "val_loss", "val_map3",
                                  "val_accuracy", "lr"]
    assert list(zip(hist["stage"], hist["phase"], hist["epoch"])) == [
        ("stage1", "A", 0), ("stage1", "A", 1), ("stage1", "B", 2),
        ("stage2", "A", 0), ("stage2", "C", 1)]
    assert hist.iloc[0]["val_loss"] == pytest.approx(first_row["val_loss"])
    # the cyclic LR went on from the resumed iteration: 1 step/epoch, min at 0, max at 1
    np.testing.assert_allclose(hist["lr"], [1e-4, 1e-3, 1e-5, 1e-4, 1e-4])

    for path in (result.model_path, result.projector_path, result.history_path, result.oof_path,
                 result.result_path):
        assert path.exists(), path
    assert sorted(result.plots) == ["confusion_matrix", "per_class_ap", "training_curves"]
    model = keras.saving.load_model(result.model_path)
    assert len(model.inputs) == 2
    oof = pd.read_csv(result.oof_path)
    assert list(oof.columns) == ["fname", "label", *store.labels]
    val = store.index[store.index.fold == 0]
    assert oof["fname"].tolist() == val["fname"].tolist()
    probs = oof[store.labels].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    summary = json.loads(result.result_path.read_text())
    assert summary["val_map3"] == pytest.approx(map_at_k(val["label_id"], probs), abs=1e-6)
    assert (summary["n_train"], summary["n_val"], summary["epochs"]) == (8, 8, 5)
    assert summary["distinct_shapes"] == 1 and summary["samples_per_s"] > 0
    assert math.isfinite(summary["val_loss"]) and summary["pca_components"] == 4

    again: list = []
    done = train_fold(cfg, store, 0, wd, on_epoch=lambda *a: again.append(a), progress=False)
    assert again == [] and done.metrics == summary


def test_train_fold_on_a_featurized_store(tmp_path):
    """The real FeatureStore from featurize on the embedded sample, 2 folds."""
    from fsd.features.featurize import featurize

    cfg = load_config(None, ["data.source=synthetic", "data.synthetic_clips_per_class=3",
                             f"store.cache_dir={tmp_path / 'cache'}", "store.workers=1",
                             f"output_dir={tmp_path / 'out'}", *TINY_FOLD,
                             "train.stage1.cyclic_epochs=1", "train.stage1.plateau_low_epochs=0",
                             "train.stage2.plateau_high_epochs=0", "train.crop_min=0",
                             "train.crop_max=0", "train.crop_bucket=25"])
    store = featurize(cfg, progress=False).store
    assert store.meta["crop_min"] < store.meta["crop_max"]
    result = train_fold(cfg, store, 1, tmp_path / "fold1", progress=False, run_eagerly=True)
    m = result.metrics
    assert (m["crop_min"], m["crop_max"]) == (store.meta["crop_min"], store.meta["crop_max"])
    assert m["n_val"] == int((store.index.fold == 1).sum()) and m["epochs"] == 2
    oof = pd.read_csv(result.oof_path)
    assert list(oof.columns[2:]) == store.labels and len(oof) == m["n_val"]
    assert 0 < m["val_map3"] <= 1
