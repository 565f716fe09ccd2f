"""Training: batches (crop/pad, augmentation, mixup), LR schedule, MAP@3, the fold loop.

Import the submodules directly (``fsd.train.fit``, ``fsd.train.metrics``, ...); this package
imports nothing heavy so that ``fsd.train.metrics`` stays usable without Keras.
"""
