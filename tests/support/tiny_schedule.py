"""The smallest real training runs the tests share: ONE_EPOCH (3 synthetic clips per class, 4 PCA
components, 30-60-frame crops, one epoch per stage phase, whatever the number of steps) for
the pipeline; TINY_FOLD and tiny_store() for a fold on a random in-memory store."""

from __future__ import annotations

ONE_EPOCH = ["data.synthetic_clips_per_class=3", "pca.n_components=4",
             "train.steps_per_epoch=0", "train.batch_size=16",
             "train.crop_min=30", "train.crop_max=60", "train.crop_bucket=30",
             "train.val_lengths=[40]",
             "train.stage1.cyclic_epochs=1", "train.stage1.plateau_low_epochs=0",
             "train.stage1.plateau_high_epochs=0", "train.stage2.cyclic_epochs=1",
             "train.stage2.plateau_low_epochs=0", "train.stage2.plateau_high_epochs=0"]

# A fold small enough to train in seconds on tiny_store()'s clips.
TINY_FOLD = [
    "model.width=0.35", "model.dense1=32", "model.dense2=16", "train.batch_size=8",
    "train.crop_min=32", "train.crop_max=64", "train.crop_bucket=32", "train.val_lengths=[40]",
    "pca.n_components=4", "folds.n_folds=2",
    "train.stage1.cyclic_epochs=2", "train.stage1.plateau_low_epochs=1",
    "train.stage1.plateau_high_epochs=0",
    "train.stage2.cyclic_epochs=1", "train.stage2.plateau_low_epochs=0",
    "train.stage2.plateau_high_epochs=1", "train.keep_better_stage=false",
]


def tiny_store(n_clips: int = 16):
    """A random in-memory store: 3 classes, 20-90 frames, 12 summary features."""
    from fsd.train.batches import MemoryStore

    return MemoryStore.random(n_clips=n_clips, n_classes=3, frames=(20, 90), summary_dim=12, seed=2)
