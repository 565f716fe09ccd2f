"""One command for a first accelerator: the recipe's network at the recipe's shapes, and what
``experiments/improved.yaml`` would cost on the real FSDKaggle2018 there.

Measures, for the stage-2 network of the config (MobileNetV2 width 1.0 + the 350-d PCA input in
improved.yaml; ``--set`` overrides), with compile time kept apart from steady-state time:

- **training**: ``train_on_batch`` at the config's batch size over the crop shapes training
  draws (the recipe's derived limits, [263, 763) frames, on the ``train.crop_bucket`` grid:
  20 shapes), samples/s;
- **test-time augmentation**: ``predict_on_batch`` at ``ensemble.batch_size`` over the 6 TTA
  lengths, forward passes/s.

Then it **projects** the wall time of improved.yaml on the real dataset (9,473 train clips, 10
folds, 9,400 test clips), counting from the config: optimiser steps per fold (epochs x steps
per epoch; the plateau phases stop early, so a lower bound with each plateau at its
early-stopping patience and an upper bound with every epoch run), validation passes (held-out
clips x validation lengths, every epoch), out-of-fold and test TTA passes (clips x folds x
lengths x crops) and compiles (shapes x stages x folds). It names the part that dominates.

    KERAS_BACKEND=jax python benchmarks/gpu_check.py             # on the accelerator, <= 10 min
    python benchmarks/gpu_check.py --smoke                        # wiring check on a CPU, ~1 min

JAX is the backend where it is importable (the GPU images have it; TensorFlow is not needed);
elsewhere Keras' configured backend. ``--json`` writes the figures to a file as well.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path

if "KERAS_BACKEND" not in os.environ and importlib.util.find_spec("jax") is not None:
    os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# FSDKaggle2018 (seed-method.md): clip counts, and the crop limits the recipe derives from the
# train lengths (25th / 75th percentile, frames of 10 ms)
N_TRAIN, N_TEST = 9473, 9400
RECIPE_CROPS = (263, 763)


def counts(cfg, crop_min: int, crop_max: int) -> dict:
    """Steps, passes and shapes of ``cfg``'s pipeline on the real dataset."""
    from fsd.model.tta import spaced_lengths

    t = cfg.train
    folds = cfg.folds.n_folds
    n_val = math.ceil(N_TRAIN / folds)
    n_fit = N_TRAIN - n_val
    steps_per_epoch = max(t.steps_per_epoch or math.ceil(n_fit / t.batch_size),
                          t.min_steps_per_epoch)
    lo_epochs = hi_epochs = 0
    for st in (t.stage1, t.stage2):
        lo_epochs += st.cyclic_epochs + sum(min(e, st.early_stopping_patience + 1)
                                            for e in (st.plateau_low_epochs, st.plateau_high_epochs))
        hi_epochs += st.cyclic_epochs + st.plateau_low_epochs + st.plateau_high_epochs
    val_lengths = spaced_lengths(t.val_lengths, t.val_n_lengths, crop_min, crop_max)
    tta = spaced_lengths(cfg.ensemble.tta_lengths, cfg.ensemble.tta_n_lengths, crop_min, crop_max)
    views = len(tta) * cfg.ensemble.tta_crops
    b = t.crop_bucket
    train_shapes = sorted({max(b, int(round(v / b)) * b) for v in range(crop_min, crop_max)})
    return {"folds": folds, "fit_clips_per_fold": n_fit, "val_clips_per_fold": n_val,
            "steps_per_epoch": steps_per_epoch, "epochs_per_fold": [lo_epochs, hi_epochs],
            "train_samples": [folds * e * steps_per_epoch * t.batch_size
                              for e in (lo_epochs, hi_epochs)],
            "val_passes": [folds * e * n_val * len(val_lengths) for e in (lo_epochs, hi_epochs)],
            "oof_tta_passes": N_TRAIN * views, "test_tta_passes": N_TEST * folds * views,
            "train_shapes": train_shapes, "val_lengths": val_lengths, "tta_lengths": tta,
            "compiles": folds * 2 * (len(train_shapes) + len(val_lengths))}


def measure(cfg, shapes: list[int], tta_lengths: list[int], steps: int, batches: int) -> dict:
    import keras
    import numpy as np

    from fsd.model.networks import build_network

    n_mels, pca = cfg.logmel.n_mels, int(cfg.pca.n_components)
    model = build_network(cfg.model, 41, n_mels, pca)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    bs, tbs = cfg.train.batch_size, cfg.ensemble.batch_size

    def inputs(n: int, length: int) -> dict:
        return {"logmel": rng.random((n, length, n_mels, 1), dtype=np.float32),
                "pca": rng.standard_normal((n, pca)).astype(np.float32)}

    y = np.eye(41, dtype=np.float32)[rng.integers(0, 41, bs)]
    compile_s = run_s = 0.0
    for length in shapes:
        x = inputs(bs, length)
        t0 = time.perf_counter()
        float(model.train_on_batch(x, y))  # the first call at a shape compiles it
        compile_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = model.train_on_batch(x, y)
        float(loss)
        run_s += time.perf_counter() - t0
    train = {"samples_per_s": len(shapes) * steps * bs / run_s,
             "compile_s_per_shape": compile_s / len(shapes), "shapes": len(shapes),
             "steps_per_shape": steps, "batch": bs}
    compile_s = run_s = 0.0
    for length in tta_lengths:
        x = inputs(tbs, length)
        t0 = time.perf_counter()
        np.asarray(model.predict_on_batch(x))
        compile_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(batches):
            out = model.predict_on_batch(x)
        np.asarray(out)
        run_s += time.perf_counter() - t0
    tta = {"passes_per_s": len(tta_lengths) * batches * tbs / run_s,
           "compile_s_per_shape": compile_s / len(tta_lengths), "batch": tbs}
    return {"train": train, "tta": tta, "params": int(model.count_params())}


def project(c: dict, m: dict) -> dict:
    sps, pps = m["train"]["samples_per_s"], m["tta"]["passes_per_s"]
    # validation is a forward pass at batch ensemble.batch_size, like TTA
    parts = {"train": [s / sps for s in c["train_samples"]],
             "validation": [v / pps for v in c["val_passes"]],
             "oof_tta": [c["oof_tta_passes"] / pps] * 2,
             "test_tta": [c["test_tta_passes"] / pps] * 2,
             "compile": [c["compiles"] * (m["train"]["compile_s_per_shape"]
                                          + m["tta"]["compile_s_per_shape"]) / 2] * 2}
    total = [sum(v[i] for v in parts.values()) for i in (0, 1)]
    return {"seconds": {k: [round(x) for x in v] for k, v in parts.items()},
            "total_hours": [round(t / 3600, 2) for t in total],
            "dominant": max(parts, key=lambda k: parts[k][0])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=REPO / "experiments" / "improved.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--smoke", action="store_true",
                    help="2 training shapes, 2 steps, 2 TTA lengths: a ~1 min wiring check")
    ap.add_argument("--steps", type=int, default=10, help="timed training steps per shape")
    ap.add_argument("--batches", type=int, default=10, help="timed TTA batches per length")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    import keras

    from fsd.config import load_config

    cfg = load_config(args.config, ["data.root=unused", "model.backbone_weights=none",
                                    *args.set])
    lo, hi = (cfg.train.crop_min, cfg.train.crop_max) if cfg.train.crop_min else RECIPE_CROPS
    c = counts(cfg, lo, hi)
    if cfg.model.precision == "float32" and keras.backend.backend() == "jax":
        cfg.model.precision = "mixed_bfloat16"  # what an accelerator runs; say so below
    shapes, tta = c["train_shapes"], c["tta_lengths"]
    steps, batches = args.steps, args.batches
    if args.smoke:
        shapes, tta, steps, batches = [shapes[0], shapes[-1]], [tta[0], tta[-1]], 2, 2
        cfg.ensemble.batch_size = min(cfg.ensemble.batch_size, 32)
    device = "cpu"
    if keras.backend.backend() == "jax":
        import jax

        device = str(jax.devices()[0])
    print(f"backend {keras.backend.backend()}, device {device}, network {cfg.model.backbone} "
          f"width {cfg.model.width}, {cfg.model.precision}, batch {cfg.train.batch_size}, "
          f"{len(shapes)} training shapes, TTA lengths {tta}", flush=True)
    t0 = time.perf_counter()
    m = measure(cfg, shapes, tta, steps, batches)
    p = project(c, m)
    report = {"backend": keras.backend.backend(), "device": device, "config": str(args.config),
              "precision": cfg.model.precision, "smoke": args.smoke, "measure": m, "counts": c,
              "projection": p, "check_s": round(time.perf_counter() - t0, 1)}
    print(f"training  {m['train']['samples_per_s']:9.1f} samples/s  "
          f"(compile {m['train']['compile_s_per_shape']:.1f} s per shape)")
    print(f"TTA       {m['tta']['passes_per_s']:9.1f} passes/s   "
          f"(compile {m['tta']['compile_s_per_shape']:.1f} s per length)")
    print(f"improved.yaml on FSDKaggle2018: {c['folds']} folds x {c['epochs_per_fold'][0]}-"
          f"{c['epochs_per_fold'][1]} epochs x {c['steps_per_epoch']} steps; "
          f"{c['oof_tta_passes']:,} out-of-fold + {c['test_tta_passes']:,} test TTA passes; "
          f"{c['compiles']} compiles")
    for k, (a, b) in p["seconds"].items():
        print(f"  {k:<11} {a / 3600:6.2f} - {b / 3600:6.2f} h")
    print(f"  projected  {p['total_hours'][0]:.2f} - {p['total_hours'][1]:.2f} h on this device "
          f"(dominant: {p['dominant']})")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
