"""The CNN must learn: a small network on the embedded sample's real log-mels clears a MAP@3 far
above chance in a few seconds of training (this fails when training stops learning: a broken
augmentation, labels shuffled against inputs, a dead branch, a schedule that never updates)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fsd.config import load_config
from fsd.data.synthetic import ensure_sample
from fsd.features.extract import extract_clip
from fsd.train.batches import MemoryStore
from fsd.train.fit import train_fold

pytestmark = pytest.mark.e2e

CHANCE_MAP3_6_CLASSES = (1 + 1 / 2 + 1 / 3) / 6  # 0.306: a random ranking of 6 classes


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory) -> MemoryStore:
    """The embedded sample's log-mels (6 classes x 8 clips) in two stratified folds."""
    cfg = load_config(None, ["summary.enabled=false"])
    csv = ensure_sample(tmp_path_factory.mktemp("sample"), 8, 0, cfg.audio.sample_rate)
    table = pd.read_csv(csv)
    mels = [extract_clip(csv.parent / f, cfg).logmel for f in table["fname"]]
    labels = sorted(table["label"].unique())
    label_id = table["label"].map({c: i for i, c in enumerate(labels)}).to_numpy()
    fold = np.zeros(len(table), dtype=np.int64)
    for c in range(len(labels)):
        fold[np.flatnonzero(label_id == c)[1::2]] = 1
    index = pd.DataFrame({"fname": table["fname"], "label": table["label"], "label_id": label_id,
                          "fold": fold, "verified": True, "offset": 0,
                          "frames": [len(m) for m in mels], "seconds": 0.0})
    # stage 2 is not trained here; its PCA input is noise so only the log-mel can carry it
    noise = np.random.default_rng(0).normal(size=(len(table), 8)).astype(np.float32)
    return MemoryStore(index, labels, mels, noise, {"crop_min": 100, "crop_max": 200})


def test_a_small_cnn_learns_the_sample_from_scratch(sample_store, tmp_path):
    cfg = load_config(None, [
        "model.backbone=cnn", "model.cnn_channels=[8,16,32]", "model.cnn_convs=1",
        "model.dense1=32", "model.dense2=16", "model.bn_momentum=0.9",
        "model.head_bn_momentum=0.9", "pca.n_components=4",
        "folds.n_folds=2", "train.batch_size=16", "train.crop_min=100", "train.crop_max=101",
        "train.val_lengths=[150]", "train.min_steps_per_epoch=10", "train.stage1.mixup_alpha=0",
        "train.stage1.cyclic_epochs=8", "train.stage1.cyclic_lr_min=1e-3",
        "train.stage1.cyclic_lr_max=3e-3", "train.stage1.plateau_low_epochs=0",
        "train.stage1.plateau_high_epochs=0", "train.stage2.cyclic_epochs=0",
        "train.stage2.plateau_low_epochs=0", "train.stage2.plateau_high_epochs=0",
    ])
    result = train_fold(cfg, sample_store, 0, tmp_path / "fold0", progress=False)
    stage1 = result.history[result.history["stage"] == "stage1"]
    assert len(stage1) == 8
    best = stage1["val_map3"].max()
    assert best > CHANCE_MAP3_6_CLASSES + 0.35, stage1.to_string()
    assert stage1["val_accuracy"].max() > 0.5, stage1.to_string()
    assert stage1["loss"].iloc[-1] < stage1["loss"].iloc[0]
    # stage 2 trained no epoch here, so the fold keeps the better stage 1 network, and its
    # final validation is stage 1's best epoch
    assert result.metrics["selected_stage"] == "stage1"
    best_epoch = stage1.loc[stage1["val_loss"].idxmin()]
    assert result.metrics["val_map3"] == pytest.approx(best_epoch["val_map3"], abs=1e-6)
