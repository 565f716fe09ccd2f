"""Training throughput: train_fold's batch pipeline vs plain model.fit on in-memory tensors.

Side by side, same model, batch size, number of steps and batch shapes:

* pipeline: ``TrainBatches`` (random-length crop/pad, time shift, flip, random erasing,
  mixup, sample weights) built ahead on a thread by ``prefetch`` and fed to the very loop
  ``train_fold`` uses (``fsd.train.fit.run_epoch``, cyclic LR set every step);
* baseline: ``model.fit`` on ready-made numpy tensors with the same shapes (one fit call per
  distinct crop length, in the pipeline's proportions);
* and, for reference, ``train_on_batch`` over the same ready tensors in the pipeline's shape
  order: the model step alone, so pipeline / step is what the batch work itself costs.

Graph tracing is done before any timer starts; the sides alternate for ``--repeats`` rounds
and the best round of each counts. Prints samples/s and the ratios (target >= 0.9).
Data: random clips shaped like FSDKaggle2018's (log-uniform 0.5-15 s), or a feature store
written by ``fsd featurize`` (``--store``).

    python benchmarks/train.py            # ~1-2 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from fsd.config import TrainConfig, load_config  # noqa: E402
from fsd.model.networks import build_network  # noqa: E402
from fsd.train.batches import MemoryStore, TrainBatches, crop_lengths  # noqa: E402
from fsd.train.fit import run_epoch  # noqa: E402
from fsd.train.schedule import Phase  # noqa: E402

log = logging.getLogger("benchmarks.train")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--width", type=float, default=0.35, help="MobileNetV2 width (model.width)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=40, help="timed training steps per side")
    p.add_argument("--crop-min", type=int, default=100, help="frames (train.crop_min)")
    p.add_argument("--crop-max", type=int, default=200, help="frames, exclusive (train.crop_max)")
    p.add_argument("--bucket", type=int, default=25, help="train.crop_bucket")
    p.add_argument("--stage", type=int, choices=(1, 2), default=2,
                   help="1: log-mel only; 2: log-mel + PCA input (mixup mixes both)")
    p.add_argument("--alpha", type=float, default=1.0, help="mixup alpha")
    p.add_argument("--clips", type=int, default=512, help="random clips when no --store")
    p.add_argument("--classes", type=int, default=41)
    p.add_argument("--pca-dim", type=int, default=350)
    p.add_argument("--store", default="", help="a feature store folder (fsd featurize) to read")
    p.add_argument("--repeats", type=int, default=2,
                   help="timed rounds per side (alternating); the best round counts")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def make_store(args: argparse.Namespace):
    if args.store:
        from fsd.features.store import FeatureStore

        return FeatureStore.open(args.store, split="train")
    # 0.5 .. 15 s at 100 frames/s, log-uniform: roughly FSDKaggle2018's length spread
    return MemoryStore.random(n_clips=args.clips, n_classes=args.classes, frames=(50, 1500),
                              summary_dim=8, seed=args.seed)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    keras.utils.set_random_seed(args.seed)
    store = make_store(args)
    n_classes = len(store.labels)
    rows = np.arange(len(store.index))
    cfg: TrainConfig = load_config(None, [
        f"train.batch_size={args.batch_size}", f"train.crop_min={args.crop_min}",
        f"train.crop_max={args.crop_max}", f"train.crop_bucket={args.bucket}"]).train
    rng = np.random.default_rng(args.seed)
    pca = rng.normal(size=(len(rows), args.pca_dim)).astype(np.float32) if args.stage == 2 else None
    ds = TrainBatches(store, rows, cfg, (args.crop_min, args.crop_max), args.alpha, pca=pca,
                      seed=args.seed, steps_per_epoch=args.steps, n_classes=n_classes)
    model = build_network(load_config(None, [f"model.width={args.width}"]).model, n_classes,
                          pca_dim=args.pca_dim if args.stage == 2 else None)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy")
    phase = Phase("A", 1, 1e-4, cyclic=True, lr_max=1e-3)
    log.info("width %.2f, %s params, batch %d, %d steps, crops %s, stage %d, %s", args.width,
             f"{model.count_params():,}", args.batch_size, args.steps,
             crop_lengths(args.crop_min, args.crop_max, args.bucket).tolist(), args.stage,
             f"store {args.store}" if args.store else f"{len(rows)} random clips")

    # The batch shapes the timed pipeline epoch will produce (a pure function of the seed).
    lengths = [ds.batch(i, epoch=1).x.shape[1] for i in range(len(ds))]
    t0 = time.perf_counter()
    for i in range(len(ds)):
        ds.batch(i, epoch=1)
    build_s = time.perf_counter() - t0
    per_length = Counter(lengths)
    n_mels = store.logmel(0).shape[1]

    def tensors(length: int, n: int) -> tuple:
        x = rng.random((n, length, n_mels, 1), dtype=np.float32)
        y = np.eye(n_classes, dtype=np.float32)[rng.integers(0, n_classes, n)]
        w = np.ones(n, dtype=np.float32)
        inputs = x if pca is None else [x, rng.normal(size=(n, args.pca_dim)).astype(np.float32)]
        return inputs, y, w

    log.info("warming up (tracing) both paths on every shape ...")
    t0 = time.perf_counter()
    for length in sorted(per_length):
        inputs, y, w = tensors(length, args.batch_size)
        model.train_on_batch(inputs, y, sample_weight=w)
        model.fit(inputs, y, sample_weight=w, batch_size=args.batch_size, epochs=1, verbose=0,
                  shuffle=False)
    log.info("warm-up %.1f s", time.perf_counter() - t0)

    data = {length: tensors(length, k * args.batch_size) for length, k in per_length.items()}
    # The pipeline's shape sequence, replayed from ready tensors: the model step alone.
    ready = []
    used = Counter()
    for length in lengths:
        inputs, y, w = data[length]
        s = slice(used[length] * args.batch_size, (used[length] + 1) * args.batch_size)
        used[length] += 1
        ready.append(([a[s] for a in inputs] if isinstance(inputs, list) else inputs[s], y[s], w[s]))
    times: dict[str, list[float]] = {"fit": [], "step": [], "pipeline": []}
    # Alternate the sides so a neighbour's load on a shared machine hits all of them alike.
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for length in sorted(data):
            inputs, y, w = data[length]
            model.fit(inputs, y, sample_weight=w, batch_size=args.batch_size, epochs=1,
                      verbose=0, shuffle=False)
        times["fit"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for inputs, y, w in ready:
            model.train_on_batch(inputs, y, sample_weight=w)
        times["step"].append(time.perf_counter() - t0)
        ds.shapes.clear()
        t0 = time.perf_counter()
        losses, _ = run_epoch(model, ds, 1, phase, 0, 1e-4)
        times["pipeline"].append(time.perf_counter() - t0)
        assert len(losses) == args.steps
        assert sorted({s[1] for s in ds.shapes}) == sorted(per_length)
    best = {k: min(v) for k, v in times.items()}
    samples = args.steps * args.batch_size
    rate = {k: samples / v for k, v in best.items()}
    print(f"batch shapes          : {len(per_length)} distinct lengths "
          f"{dict(sorted(per_length.items()))}")
    print(f"batch building only   : {samples / build_s:8.1f} samples/s (no training, one thread)")
    print(f"model.fit, in memory  : {rate['fit']:8.1f} samples/s ({best['fit']:.1f} s, "
          f"{len(data)} fit calls)")
    print(f"train_on_batch, ready : {rate['step']:8.1f} samples/s ({best['step']:.1f} s, "
          f"the model step alone)")
    print(f"train_fold pipeline   : {rate['pipeline']:8.1f} samples/s ({best['pipeline']:.1f} s)")
    print(f"ratio vs model.fit    : {rate['pipeline'] / rate['fit']:8.3f} (target >= 0.9)")
    print(f"ratio vs model step   : {rate['pipeline'] / rate['step']:8.3f} (the pipeline's own cost)")
    print(f"rounds (s, best of {args.repeats} counts): "
          + ", ".join(f"{k} {[round(t, 1) for t in v]}" for k, v in times.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
