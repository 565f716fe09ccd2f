"""StandardScaler + PCA of the summary features (the recipe keeps 350 components, ~97%)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fsd.config import PCAConfig

log = logging.getLogger(__name__)


class SummaryProjector:
    """Scale each summary column to zero mean / unit variance, then project onto the top PCs.

    ``n_components`` >= 1 keeps that many components, capped at ``min(n_samples, n_features)``
    (with a warning); a value in (0, 1) keeps the fewest components explaining that fraction
    of the variance. Columns that are constant in the fit data (e.g. the set-4 "std of one
    sample" columns) scale to 0 and carry no weight.
    """

    def __init__(self, n_components: float = 350, whiten: bool = False, random_state: int = 0):
        if not n_components > 0:
            raise ValueError(f"n_components must be positive, got {n_components}")
        self.n_components = n_components
        self.whiten = whiten
        self.random_state = random_state
        self.scaler = None
        self.pca = None

    @classmethod
    def from_config(cls, cfg: PCAConfig) -> SummaryProjector:
        return cls(n_components=cfg.n_components, whiten=cfg.whiten)

    def fit(self, X: np.ndarray) -> SummaryProjector:
        from sklearn.decomposition import PCA
        from sklearn.preprocessing import StandardScaler

        X = _check(X)
        n, d = X.shape
        if n < 2:
            raise ValueError(f"PCA needs at least 2 clips to fit, got {n}")
        self.scaler = StandardScaler().fit(X)
        Z = self.scaler.transform(X)
        k: float | int
        if self.n_components >= 1:
            k = int(self.n_components)
            cap = min(n, d)
            if k > cap:
                log.warning("pca.n_components=%d exceeds min(n_samples=%d, n_features=%d); "
                            "keeping %d components", k, n, d, cap)
                k = cap
        else:
            k = float(self.n_components)
        self.pca = PCA(n_components=k, whiten=self.whiten, svd_solver="full",
                       random_state=self.random_state).fit(Z)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        if self.pca is None or self.scaler is None:
            raise RuntimeError("SummaryProjector is not fitted; call fit() or load() first")
        X = _check(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"expected {self.n_features_in_} summary features, got {X.shape[1]}")
        return self.pca.transform(self.scaler.transform(X)).astype(np.float32)

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        return self.fit(X).transform(X)

    @property
    def explained_variance_ratio_(self) -> np.ndarray:
        if self.pca is None:
            raise RuntimeError("SummaryProjector is not fitted")
        return self.pca.explained_variance_ratio_

    @property
    def n_components_(self) -> int:
        if self.pca is None:
            raise RuntimeError("SummaryProjector is not fitted")
        return int(self.pca.n_components_)

    @property
    def n_features_in_(self) -> int:
        if self.scaler is None:
            raise RuntimeError("SummaryProjector is not fitted")
        return int(self.scaler.n_features_in_)

    def save(self, path: str | Path) -> Path:
        """joblib-dump the fitted projector (written to a temporary name, then renamed)."""
        import os

        import joblib

        if self.pca is None:
            raise RuntimeError("refusing to save an unfitted SummaryProjector")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        joblib.dump(self, tmp)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> SummaryProjector:
        import joblib

        obj = joblib.load(Path(path))
        if not isinstance(obj, cls):
            raise TypeError(f"{path} holds a {type(obj).__name__}, not a SummaryProjector")
        return obj


def _check(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"expected a 2-D (clips, features) array, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("summary features contain NaN or inf")
    return X
