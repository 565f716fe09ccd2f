"""How the default baselines were chosen: candidates side by side on a store's own folds.

For each feature store given (a featurized dataset: ``<store.cache_dir>/features/<key>``), every
candidate is scored out of fold on the store's folds (fold k's model trained on the others),
MAP@3 and accuracy, with the same cleaning as ``fsd baseline``. The candidates are the shipped
models (``fsd.baseline.model.make_estimator``: logreg, svc, extratrees, vote) and the variants
they were chosen against (logreg and SVC without quantile scaling, a random forest, k-NN).

    .venv/bin/python docs/evidence/baseline_choice.py STORE [STORE ...] > baseline_choice.txt

Nothing here is tuned per store: one list of candidates, one set of settings, two datasets.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def candidates(bcfg):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import QuantileTransformer, StandardScaler
    from sklearn.svm import SVC

    from fsd.baseline.model import make_estimator

    return {
        "logreg (StandardScaler; the reference)": lambda y: make_estimator("logreg", bcfg, y),
        "logreg (quantile)": lambda y: make_estimator("logreg", bcfg, y, "quantile"),
        "svc (StandardScaler)": lambda y: make_pipeline(StandardScaler(), SVC(C=10, probability=True,
                                                                              random_state=0)),
        "svc (quantile; shipped)": lambda y: make_estimator("svc", bcfg, y),
        "extratrees (shipped)": lambda y: make_estimator("extratrees", bcfg, y),
        "random forest 500": lambda y: RandomForestClassifier(500, n_jobs=1, random_state=0),
        "k-NN 15 (quantile)": lambda y: make_pipeline(
            QuantileTransformer(n_quantiles=100, output_distribution="normal"),
            KNeighborsClassifier(15, weights="distance")),
        "vote (shipped default)": lambda y: make_estimator("vote", bcfg, y),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("stores", nargs="+", help="feature store directories")
    args = p.parse_args(argv)
    from fsd.baseline.fit import usable_rows
    from fsd.baseline.model import clean_features
    from fsd.config import BaselineConfig
    from fsd.features.store import FeatureStore
    from fsd.train.metrics import reciprocal_ranks

    warnings.filterwarnings("ignore")
    bcfg = BaselineConfig()
    for path in args.stores:
        store = FeatureStore.open(path)
        rows = usable_rows(store.index)
        x = clean_features(np.asarray(store.summary)[rows])
        y = store.index["label_id"].to_numpy(np.int64)[rows]
        folds = store.index["fold"].to_numpy(np.int64)[rows]
        print(f"\n{path}: {len(y)} clips, {len(store.labels)} classes, "
              f"{len(set(folds.tolist()))} folds, {x.shape[1]} features")
        print("| candidate | MAP@3 | accuracy | fit s |\n|---|---|---|---|")
        for name, make in candidates(bcfg).items():
            t0 = time.perf_counter()
            probs = np.zeros((len(y), len(store.labels)))
            for f in sorted(set(folds.tolist())):
                held = folds == f
                model = make(y[~held]).fit(x[~held], y[~held])
                probs[np.ix_(held, model.classes_)] = model.predict_proba(x[held])
            map3 = reciprocal_ranks(y, probs, 3).mean()
            acc = reciprocal_ranks(y, probs, 1).mean()
            print(f"| {name} | {map3:.3f} | {acc:.3f} | {time.perf_counter() - t0:.0f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
