"""Features: log-mel spectrograms and the recipe's summary statistics, and their store.

- :mod:`fsd.features.logmel` -- the network's (frames, 64) input
- :mod:`fsd.features.summary` -- the 1,133 summary statistics
- :mod:`fsd.features.extract` -- raw audio -> both (the single path, also used by serving)
- :mod:`fsd.features.projection` -- StandardScaler + PCA of the summary features
- :mod:`fsd.features.store` -- the resumable, memory-mapped on-disk store
- :mod:`fsd.features.featurize` -- the stage that fills the store on all cores
- :mod:`fsd.features.report` -- its plots

Submodules are imported on use, so ``import fsd.features`` stays cheap.
"""

# The config sections that define the features (with the data): a store's key, and the
# feature key runs are tagged with (fsd.tracking.keys), which must not load the store's code.
STORE_SECTIONS = ("audio", "logmel", "summary", "folds")
