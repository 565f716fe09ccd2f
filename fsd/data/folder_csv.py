"""An audio folder plus a CSV with configurable columns (ESC-10, the synthetic sample, ...)."""

from __future__ import annotations

import logging
from pathlib import Path

from fsd.data.dataset import (
    Dataset,
    DatasetError,
    build_train,
    read_table,
    require_clips,
    scan_audio,
)

log = logging.getLogger(__name__)


def load_folder(
    audio_dir: str | Path,
    csv: str | Path,
    *,
    file_column: str = "fname",
    label_column: str = "label",
    fold_column: str = "",
    verified_column: str = "manually_verified",
    group_column: str = "",
    name: str = "",
) -> Dataset:
    """Clips in ``audio_dir`` labelled by ``csv``.

    ``fold_column`` is optional ('' for none; its values become 0-based folds), and so is
    ``group_column`` (clips of one group share a fold, see :func:`fsd.folds.assign_folds`).
    ``verified_column`` is optional: when the CSV lacks it every clip counts as verified.
    File, label and (when named) fold columns are required: a CSV without one raises
    DatasetError naming the columns it has.
    """
    audio_dir, csv = Path(audio_dir), Path(csv)
    if not audio_dir.is_dir():
        raise DatasetError(f"data.audio_dir {str(audio_dir)!r} does not exist")
    table = read_table(csv, [file_column, label_column, fold_column, group_column], "data.csv")
    if verified_column and verified_column not in table.columns:
        log.info("%s has no %r column: every clip counts as verified", csv.name, verified_column)
        verified_column = ""
    files = scan_audio(audio_dir)
    train, rejects = build_train(
        table, files, audio_dir=audio_dir, csv_name=csv.name, file_column=file_column,
        label_column=label_column, verified_column=verified_column, fold_column=fold_column,
        group_column=group_column,
    )
    ds_name = name or (csv.parent.name or audio_dir.name)
    require_clips(train, rejects, f"{ds_name} ({csv})")
    return Dataset(name=ds_name, train=train, labels=sorted(train["label"].unique()),
                   test=None, rejects=rejects)

