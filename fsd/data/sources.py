"""Load the dataset a config names: dispatch on ``data.source``, then apply ``data.max_clips``.

The loaders (:mod:`fsd.data.fsdkaggle2018`, :mod:`fsd.data.folder_csv`, the synthetic sample)
build on the interface and helpers of :mod:`fsd.data.dataset`; this module sits above them all,
so imports run one way.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fsd.data.dataset import Dataset, DatasetError, limit_round_robin
from fsd.data.folder_csv import load_class_folders, load_folder
from fsd.data.fsdkaggle2018 import load_fsdkaggle2018
from fsd.data.synthetic import ensure_sample

log = logging.getLogger(__name__)


def load_dataset(cfg) -> Dataset:  # cfg: fsd.config.Config
    """Dispatch on ``cfg.data.source``, then apply ``cfg.data.max_clips``."""
    data = cfg.data
    if data.source == "fsdkaggle2018":
        ds = load_fsdkaggle2018(data.root, group_column=cfg.folds.group_column)
    elif data.source == "folder" and not data.csv:  # the labels are the class subfolders
        root = Path(data.root) if data.root else None
        ds = load_class_folders(_under(root, data.audio_dir), group_column=cfg.folds.group_column)
    elif data.source == "folder":
        root = Path(data.root) if data.root else None
        ds = load_folder(
            _under(root, data.audio_dir), _under(root, data.csv),
            file_column=data.file_column, label_column=data.label_column,
            fold_column=data.fold_column, verified_column=data.verified_column,
            group_column=cfg.folds.group_column,
        )
    elif data.source == "synthetic":
        csv = ensure_sample(cfg.store.cache_dir, data.synthetic_clips_per_class,
                            data.synthetic_seed, cfg.audio.sample_rate)
        ds = load_folder(csv.parent, csv, file_column="fname", label_column="label",
                         fold_column="", verified_column="manually_verified", name="synthetic")
    else:
        raise DatasetError(
            f"unknown data.source {data.source!r}; use synthetic, fsdkaggle2018 or folder"
        )
    if data.max_clips > 0 and len(ds.train) > data.max_clips:
        ds.train = limit_round_robin(ds.train, data.max_clips)
        ds.labels = sorted(ds.train["label"].unique())
        if ds.test is not None:
            # Scoring a class the model cannot predict would only add noise to a quick run.
            ds.test.loc[~ds.test["label"].isin(ds.labels + [""]), "label"] = ""
        log.info("data.max_clips=%d: kept %d train clips over %d labels",
                 data.max_clips, len(ds.train), len(ds.labels))
    log.info("%s", ds.summary())
    if ds.rejects:
        log.warning("%d metadata rows left out (first: %s: %s)", len(ds.rejects),
                    ds.rejects[0].fname, ds.rejects[0].reason)
    return ds


def _under(root: Path | None, path: str) -> Path:
    """A relative ``data.audio_dir``/``data.csv`` is taken under ``data.root`` when one is set."""
    p = Path(path)
    return root / p if root is not None and not p.is_absolute() else p
