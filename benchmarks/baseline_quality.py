"""Baseline settings side by side on real feature stores: out-of-fold MAP@3 over several seeds.

A change of a baseline's defaults made for full size (a leaf cap, fewer trees, a clip cap)
must not cost quality on the real sets. One run fits each variant on each store's own folds,
seed by seed, and prints the mean and spread of the out-of-fold MAP@3 and the fit seconds,
each variant against the first one (the named baseline):

    .venv/bin/python benchmarks/baseline_quality.py STORE [STORE ...] --models extratrees,vote \\
        --variant old:extratrees_max_leaf_nodes=0 --variant shipped: --seeds 0,1,2

A variant is ``name:key=value,key=value`` over ``BaselineConfig`` (empty: the shipped
defaults). Stores are ``<cache_dir>/features/<key>`` folders of ``fsd featurize`` (e.g. of
``experiments/instruments.yaml`` and ``experiments/esc10.yaml``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_log import append_result  # noqa: E402  (beside this script)


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, body = text.partition(":")
    pairs = [p for p in body.split(",") if p]
    return name, dict(p.split("=", 1) for p in pairs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stores", type=Path, nargs="+")
    ap.add_argument("--models", default="extratrees,vote")
    ap.add_argument("--variant", action="append", required=True,
                    help="name:key=value,... over BaselineConfig; the first is the baseline")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--results", type=Path,
                    default=REPO / "benchmarks" / "results" / "baseline_quality.jsonl")
    args = ap.parse_args(argv)
    import numpy as np

    from fsd.baseline.fit import oof_probabilities, usable_rows
    from fsd.baseline.model import BaselineModel, clean_features
    from fsd.config import BaselineConfig, from_dict
    from fsd.evaluation.metrics import map_at_k
    from fsd.features.store import FeatureStore

    variants = []
    for text in args.variant:
        name, sets = parse_variant(text)
        # through the config loader, so a typo or an out-of-range value is refused as usual
        cfg = from_dict({}, [f"baseline.{k}={v}" for k, v in sets.items()])
        variants.append((name, cfg.baseline))
    seeds = [int(s) for s in args.seeds.split(",")]
    report = {"seeds": seeds, "variants": args.variant, "stores": {}}
    for path in args.stores:
        store = FeatureStore.open(path)
        rows = usable_rows(store.index)
        x = clean_features(np.asarray(store.summary)[rows])
        y = store.index["label_id"].to_numpy()[rows]
        folds = store.index["fold"].to_numpy()[rows]
        n_classes = len(store.labels)
        print(f"{path}: {len(rows)} clips, {n_classes} classes, {len(set(folds))} folds",
              flush=True)
        table = report["stores"][str(path)] = {}
        for model in args.models.split(","):
            scores: dict[str, list[float]] = {}
            seconds: dict[str, list[float]] = {}
            for seed in seeds:  # variants alternate within a seed: load hits them alike
                for name, bcfg in variants:
                    b: BaselineConfig = dataclasses.replace(bcfg, seed=seed)
                    t0 = time.perf_counter()
                    probs, _ = oof_probabilities(
                        x, y, folds, n_classes,
                        lambda xf, yf, b=b, m=model, k=n_classes: BaselineModel.fit_new(m, b, xf, yf, k))
                    seconds.setdefault(name, []).append(time.perf_counter() - t0)
                    scores.setdefault(name, []).append(map_at_k(y, probs))
            base = variants[0][0]
            for name, _ in variants:
                s, t = np.array(scores[name]), np.array(seconds[name])
                delta = s.mean() - np.mean(scores[base])
                print(f"  {model:>10} {name:>10}: MAP@3 {s.mean():.4f} (+-{s.std():.4f}, "
                      f"{len(s)} seeds) {delta:+.4f} vs {base} | {t.mean():5.1f} s a run, "
                      f"{np.mean(seconds[base]) / t.mean():.2f}x {base}'s speed", flush=True)
                table.setdefault(model, {})[name] = {"map3": s.tolist(), "seconds": t.tolist()}
    append_result(args.results, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
