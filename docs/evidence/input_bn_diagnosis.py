"""Why stage 1 stayed at chance: the input BatchNorm's moving statistics, reproduced.

Trains the small CNN on the embedded sample (6 classes, 24 training clips) for 80 steps, three
ways, and prints per epoch the held-out accuracy in inference mode next to the accuracy on a
training batch in training mode (batch statistics) and in inference mode (moving statistics):

  before   every non-backbone BatchNorm at Keras' default momentum 0.99, moving statistics
           starting at (0, 1), as the recipe's network was built until this fix
  momentum the same with model.head_bn_momentum=0.9
  init     the input BN starts at the training batches' statistics (fsd.model.networks.
           set_input_statistics, as train_fold now does), momentum 0.99 kept
  both     init and head_bn_momentum=0.9 (what the short configs ship)

Run: .venv/bin/python docs/evidence/input_bn_diagnosis.py  (about a minute on 2 cores)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import keras
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fsd.config import load_config  # noqa: E402
from fsd.data.synthetic import ensure_sample  # noqa: E402
from fsd.features.extract import extract_clip  # noqa: E402
from fsd.model.networks import MEL_BRANCH, build_network, set_input_statistics  # noqa: E402
from fsd.model.tta import predict_ensemble  # noqa: E402
from fsd.train.batches import MemoryStore, TrainBatches  # noqa: E402

MODEL = ["model.backbone=cnn", "model.cnn_channels=[8,16,32]", "model.cnn_convs=1",
         "model.dense1=32", "model.dense2=16", "model.bn_momentum=0.9", "train.batch_size=16"]


def sample() -> tuple[list[np.ndarray], np.ndarray, np.ndarray, list[str]]:
    cfg = load_config(None, ["summary.enabled=false"])
    csv = ensure_sample(Path(tempfile.gettempdir()) / "fsd-bn-diagnosis", 8, 0, 44100)
    table = pd.read_csv(csv)
    mels = [extract_clip(csv.parent / f, cfg).logmel for f in table["fname"]]
    labels = sorted(table["label"].unique())
    y = table["label"].map({c: i for i, c in enumerate(labels)}).to_numpy()
    fold = np.zeros(len(y), dtype=np.int64)
    for c in range(len(labels)):
        fold[np.flatnonzero(y == c)[1::2]] = 1
    return mels, y, fold, labels


def run(variant: str, mels, y, fold, labels) -> None:
    overrides = MODEL + (["model.head_bn_momentum=0.9"] if variant in ("momentum", "both")
                         else [])
    cfg = load_config(None, overrides)
    index = pd.DataFrame({"fname": range(len(y)), "label": [labels[i] for i in y],
                          "label_id": y, "fold": fold, "verified": True, "offset": 0,
                          "frames": [len(m) for m in mels], "seconds": 0.0})
    store = MemoryStore(index, labels, mels, np.zeros((len(y), 4), np.float32), {})
    train, val = np.flatnonzero(fold == 0), np.flatnonzero(fold == 1)
    batches = TrainBatches(store, train, cfg.train, (100, 101), 0.0, steps_per_epoch=10)
    keras.utils.set_random_seed(0)
    model = build_network(cfg.model, len(labels), 64)
    if variant in ("init", "both"):
        x = np.concatenate([batches.batch(i, 0).x.ravel() for i in range(8)])
        set_input_statistics(model, logmel=(x.mean(), x.var()))
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="categorical_crossentropy")
    print(f"\n{variant}: epoch, held-out accuracy (inference), training batch accuracy "
          "(training mode / inference mode)")
    for epoch in range(8):
        for step in range(10):
            b = batches.batch(step, epoch)
            model.train_on_batch(b.x, b.y)
        p = predict_ensemble([model], [mels[i] for i in val], [None], [150], 1).probs()
        b = batches.batch(0, epoch)
        truth = b.y.argmax(1)
        train_mode = (np.asarray(model(b.x, training=True)).argmax(1) == truth).mean()
        infer_mode = (model.predict_on_batch(b.x).argmax(1) == truth).mean()
        print(f"  {epoch}  {np.mean(p.argmax(1) == y[val]):.3f}   {train_mode:.3f} / {infer_mode:.3f}")
    bn = model.get_layer(MEL_BRANCH).get_layer("mel_bn")
    x = batches.batch(0, 0).x
    print(f"  mel_bn moving mean/var {float(np.asarray(bn.moving_mean)[0]):.3f} / "
          f"{float(np.asarray(bn.moving_variance)[0]):.3f}; a batch's {x.mean():.3f} / {x.var():.3f}")


if __name__ == "__main__":
    data = sample()
    for v in ("before", "momentum", "init", "both"):
        run(v, *data)
