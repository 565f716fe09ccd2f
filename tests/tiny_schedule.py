"""The smallest real training run the pipeline tests share: 3 synthetic clips per class, 4 PCA
components, 30-60-frame crops, one epoch per stage phase (whatever the number of steps)."""

ONE_EPOCH = ["data.synthetic_clips_per_class=3", "pca.n_components=4",
             "train.steps_per_epoch=0", "train.batch_size=16",
             "train.crop_min=30", "train.crop_max=60", "train.crop_bucket=30",
             "train.val_lengths=[40]",
             "train.stage1.cyclic_epochs=1", "train.stage1.plateau_low_epochs=0",
             "train.stage1.plateau_high_epochs=0", "train.stage2.cyclic_epochs=1",
             "train.stage2.plateau_low_epochs=0", "train.stage2.plateau_high_epochs=0"]
