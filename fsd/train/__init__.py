"""Training: batches (crop/pad, augmentation, mixup), LR schedule, the fold loop and its
checkpoint, the fold folder.

Import the submodules directly (``fsd.train.fit``, ``fsd.train.folddir``, ...); this package
imports nothing heavy.
"""
