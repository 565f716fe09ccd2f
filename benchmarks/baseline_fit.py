"""The baselines' fits at full size: the shipped settings against the old ones, side by side.

One fold of a featurized store (fold 0 held out, every other fold fitted, as ``fsd baseline``
does ten times and once more for the final model), each model fitted two ways in one run,
alternating so that load hits both alike:

- **shipped**: ``baseline.threads: 1`` (one BLAS/OpenMP thread per fit),
  ``baseline.svc_max_clips: 2000`` (the RBF SVC on a stratified 2,000-clip share) and 250
  ExtraTrees of at most 512 leaves (``extratrees_n_estimators``, ``extratrees_max_leaf_nodes``);
- **old** (the baseline, the settings before issue 16): the libraries' default thread pools
  (every core), the SVC on every clip, 500 fully grown ExtraTrees.

``--beside K`` starts K single-threaded busy processes first, as the fold workers of
``fsd main`` are when the baselines fit (``train.fold_workers: 2`` on 2 cores): that is where
unbounded thread pools hurt. It prints, per model, CPU and wall seconds of each way, the
ratio old / shipped, the held-out MAP@3 of each (the caps must not cost much) and the size of
the fitted model as saved (what the bundle and every serving process carry).

    .venv/bin/python benchmarks/baseline_fit.py STORE_DIR --beside 2
    .venv/bin/python benchmarks/full_size.py --scale 1 --out DIR --generate-only   # a full-size set
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_log import append_result  # noqa: E402  (beside this script)


def _busy(stop) -> None:
    import numpy as np
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).random((256, 256))
    with threadpool_limits(1):
        while not stop.is_set():
            a = np.tanh(a @ a)


def fit_once(name: str, bcfg, x, y, xt, yt, n_classes: int) -> dict:
    from fsd.baseline.model import BaselineModel
    from fsd.evaluation.metrics import map_at_k

    cpu, wall = time.process_time(), time.perf_counter()
    model = BaselineModel.fit_new(name, bcfg, x, y, n_classes)
    out = {"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}
    out["map3"] = map_at_k(yt, model.predict_proba(xt))
    with tempfile.TemporaryDirectory() as tmp:
        out["saved_mb"] = model.save(Path(tmp) / "model.joblib").stat().st_size / 2**20
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store", type=Path, help="a feature store: <store.cache_dir>/features/<key>")
    ap.add_argument("--models", default="logreg,svc,extratrees,hgb")
    ap.add_argument("--beside", type=int, default=0, help="busy single-thread processes beside")
    ap.add_argument("--results", type=Path,
                    default=REPO / "benchmarks" / "results" / "baseline_fit.jsonl")
    args = ap.parse_args(argv)
    import dataclasses

    import numpy as np

    from fsd.baseline.fit import usable_rows
    from fsd.baseline.model import clean_features
    from fsd.config import BaselineConfig
    from fsd.features.store import FeatureStore

    store = FeatureStore.open(args.store)
    rows = usable_rows(store.index)
    x = clean_features(np.asarray(store.summary)[rows])
    y = store.index["label_id"].to_numpy()[rows]
    held = store.index["fold"].to_numpy()[rows] == 0
    shipped = BaselineConfig()
    old = dataclasses.replace(shipped, threads=0, svc_max_clips=0, extratrees_n_estimators=500,
                              extratrees_max_leaf_nodes=0)
    print(f"{len(rows)} clips, {x.shape[1]} features, {len(store.labels)} classes; fitting on "
          f"{(~held).sum()}, scoring {held.sum()}; {args.beside} busy processes beside",
          flush=True)
    stop = mp.Event()
    busy = [mp.Process(target=_busy, args=(stop,), daemon=True) for _ in range(args.beside)]
    for p in busy:
        p.start()
    report = {"store": str(args.store), "n_fit": int((~held).sum()), "beside": args.beside,
              "models": {}}
    try:
        for name in args.models.split(","):
            runs = {}
            for way, bcfg in (("shipped", shipped), ("old", old)):
                runs[way] = fit_once(name, bcfg, x[~held], y[~held], x[held], y[held],
                                     len(store.labels))
            s, o = runs["shipped"], runs["old"]
            report["models"][name] = runs
            print(f"{name:>10}: shipped {s['cpu_s']:6.1f} s CPU {s['wall_s']:6.1f} s wall "
                  f"MAP@3 {s['map3']:.3f} {s['saved_mb']:.0f} MB | old {o['cpu_s']:6.1f} s CPU "
                  f"{o['wall_s']:6.1f} s wall MAP@3 {o['map3']:.3f} {o['saved_mb']:.0f} MB | "
                  f"wall ratio old/shipped {o['wall_s'] / s['wall_s']:.2f}x",
                  flush=True)
    finally:
        stop.set()
        for p in busy:
            p.join(5)
    append_result(args.results, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
