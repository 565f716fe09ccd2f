"""Session fixtures for the ensemble and serving tests: two tiny trained folds, one ensemble.

Built once per session (the slow part: featurize + 2 folds + the ensemble step, about a minute
on two cores), in a tmp sqlite tracking store. The dataset is a tiny FSDKaggle2018-shaped
folder made from the synthetic sample: train clips with a train CSV, test clips with labels and
Public/Private usage, and one empty test file, so the submission path (prior for clips without
audio) runs end to end. tests/e2e/conftest.py gives its fixtures to the e2e tier.
"""

from __future__ import annotations

import csv
import functools
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

MODEL_NAME = "fsd-test-ensemble"


@contextmanager
def tracking_at(uri: str) -> Iterator[None]:
    """Point MLflow (env and the process-wide URI) at ``uri``; restore both afterwards."""
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    old_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI",
                                              "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK")}
    old_uri = tracking_utils._tracking_uri
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK"] = "true"
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        if mlflow.active_run():
            mlflow.end_run()
        tracking_utils._tracking_uri = old_uri
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def make_kaggle_layout(root: Path, cache: Path, train_per_class: int = 4,
                       test_per_class: int = 2) -> Path:
    """A small FSDKaggle2018-layout dataset from the synthetic sample (regular clips only)."""
    from fsd.data.synthetic import ensure_sample

    csv_path = ensure_sample(cache, train_per_class + test_per_class, seed=0)
    rows = list(csv.DictReader(csv_path.open()))
    train_dir = root / "FSDKaggle2018.audio_train"
    test_dir = root / "FSDKaggle2018.audio_test"
    meta = root / "FSDKaggle2018.meta"
    for d in (train_dir, test_dir, meta):
        d.mkdir(parents=True, exist_ok=True)
    seen: dict[str, int] = {}
    train_rows, test_rows = [], []
    for r in rows:
        if r.get("edge"):
            continue
        k = seen.get(r["label"], 0)
        seen[r["label"]] = k + 1
        src = csv_path.parent / r["fname"]
        if k < train_per_class:
            shutil.copy(src, train_dir / r["fname"])
            train_rows.append([r["fname"], r["label"], r["manually_verified"]])
        else:
            name = f"t_{r['fname']}"
            shutil.copy(src, test_dir / name)
            test_rows.append([name, r["label"], "Public" if len(test_rows) % 2 else "Private"])
    (test_dir / "empty0.wav").write_bytes(b"")  # as FSDKaggle2018's three empty test clips
    test_rows.append(["empty0.wav", train_rows[0][1], "Public"])
    with (meta / "train_post_competition.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["fname", "label", "manually_verified"])
        w.writerows(train_rows)
    with (meta / "test_post_competition_scoring_clips.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["fname", "label", "usage"])
        w.writerows(test_rows)
    return root


def tiny_config(root: Path, data_root: Path):
    from fsd.config import from_dict

    stage = {"cyclic_epochs": 1, "plateau_low_epochs": 0, "plateau_high_epochs": 0}
    return from_dict({
        "name": "enstest",
        "output_dir": str(root / "outputs"),
        "data": {"source": "fsdkaggle2018", "root": str(data_root)},
        "pca": {"n_components": 8},
        "folds": {"n_folds": 2},
        "store": {"cache_dir": str(root / "cache"), "shard_size": 16, "workers": 2},
        "model": {"width": 0.35, "dense1": 32, "dense2": 16},
        "train": {"batch_size": 16, "crop_min": 30, "crop_max": 60, "crop_bucket": 30,
                  "val_lengths": [40], "stage1": dict(stage, mixup_alpha=1.0),
                  "stage2": dict(stage, mixup_alpha=0.5)},
        "ensemble": {"tta_n_lengths": 2, "tta_crops": 2, "batch_size": 64,
                     "model_name": MODEL_NAME, "max_request_clips": 4,
                     "max_clip_bytes": 2_000_000},
    })


@dataclass
class TrainedEnsemble:
    """What the session built: the store URI, config, fold runs and the ensemble summary."""

    root: Path
    uri: str
    cfg: object
    fold_run_ids: list[str]
    summary: dict

    @property
    def model_uri(self) -> str:
        return f"models:/{MODEL_NAME}@champion"


@pytest.fixture(scope="session")
def trained_ensemble(tmp_path_factory) -> TrainedEnsemble:
    """Featurize, train 2 tiny folds and run the ensemble step (registers @champion)."""
    pytest.importorskip("tensorflow")
    from fsd import tracking
    from fsd.entrypoints.ensemble import build_ensemble
    from fsd.entrypoints.featurize import featurize_logged, resolve_store
    from fsd.entrypoints.train_fold import train_fold_logged
    from fsd.train import fit

    root = tmp_path_factory.mktemp("ensemble")
    uri = f"sqlite:///{root}/mlflow.db"
    data_root = make_kaggle_layout(root / "data", root / "cache")
    cfg = tiny_config(root, data_root)
    with tracking_at(uri):
        with tracking.stage_run(cfg, "featurize"):
            featurize_logged(cfg)
        store, features_run = resolve_store(cfg)
        run_ids = []
        with pytest.MonkeyPatch.context() as mp:
            # eager steps: tracing a train step costs more than one tiny epoch
            mp.setattr(fit, "train_fold", functools.partial(fit.train_fold, run_eagerly=True))
            for fold in range(cfg.folds.n_folds):
                cfg.train.fold = fold
                _, run_id = train_fold_logged(cfg, store, features_run)
                run_ids.append(run_id)
        cfg.train.fold = 0
        summary = build_ensemble(cfg, None, register=True)
    return TrainedEnsemble(root=root, uri=uri, cfg=cfg, fold_run_ids=run_ids, summary=summary)


@pytest.fixture
def ensemble_tracking(trained_ensemble) -> Iterator[TrainedEnsemble]:
    """The session's tracking store, selected for one test (and restored after it)."""
    with tracking_at(trained_ensemble.uri):
        yield trained_ensemble
