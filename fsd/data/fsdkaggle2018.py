"""FSDKaggle2018 in its own layout (Zenodo record 2552860), or Kaggle's original files.

::

    <root>/FSDKaggle2018.audio_train/*.wav          (or audio_train/)
    <root>/FSDKaggle2018.audio_test/*.wav           (optional; or audio_test/)
    <root>/FSDKaggle2018.meta/train_post_competition.csv   fname,label,manually_verified,...
    <root>/FSDKaggle2018.meta/test_post_competition_scoring_clips.csv  fname,label,usage,...
                                 (or test_post_competition.csv, every test clip)

Kaggle's ``train.csv`` (fname,label,manually_verified) is accepted in place of the
post-competition file, directly under the root or in the meta folder.

The test split is every WAV in the test folder: a submission must list each one, so even
the three empty clips of the real dataset stay in it (featurize rejects them as audio).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from fsd.data.dataset import (
    NOT_INSIDE,
    TEST_COLUMNS,
    Dataset,
    DatasetError,
    build_train,
    read_table,
    require_clips,
    row_path,
    scan_audio,
    table_lines,
    text,
)
from fsd.data.rejects import Reject

log = logging.getLogger(__name__)

META = "FSDKaggle2018.meta"
TRAIN_DIRS = ("FSDKaggle2018.audio_train", "audio_train")
TEST_DIRS = ("FSDKaggle2018.audio_test", "audio_test")
TRAIN_CSVS = (f"{META}/train_post_competition.csv", "train_post_competition.csv",
              f"{META}/train.csv", "train.csv")
TEST_CSVS = (f"{META}/test_post_competition_scoring_clips.csv",
             "test_post_competition_scoring_clips.csv",
             f"{META}/test_post_competition.csv", "test_post_competition.csv")
# The full test CSV writes "None" for the unscored clips; pandas reads that as NaN.
_NO_LABEL = frozenset({"", "none", "nan"})


def _first(root: Path, candidates: tuple[str, ...], kind: str) -> Path | None:
    for rel in candidates:
        p = root / rel
        if (p.is_dir() if kind == "dir" else p.is_file()):
            return p
    return None


def load_fsdkaggle2018(root: str | Path, group_column: str = "") -> Dataset:
    """Train clips from the train folder + train CSV; test clips from the test folder.

    ``group_column`` (e.g. ``freesound_id``) names a train CSV column for group-aware folds."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data.root {str(root)!r} does not exist")
    train_dir = _first(root, TRAIN_DIRS, "dir")
    if train_dir is None:
        raise DatasetError(f"no train audio folder under {str(root)!r}; expected one of "
                           f"{', '.join(TRAIN_DIRS)}")
    train_csv = _first(root, TRAIN_CSVS, "file")
    if train_csv is None:
        raise DatasetError(f"no train CSV under {str(root)!r}; expected one of "
                           f"{', '.join(TRAIN_CSVS)}")
    table = read_table(train_csv, ["fname", "label", "manually_verified", group_column],
                       "train CSV")
    train, rejects = build_train(
        table, scan_audio(train_dir, [".wav"]), audio_dir=train_dir, csv_name=train_csv.name,
        verified_column="manually_verified", group_column=group_column,
    )
    require_clips(train, rejects, f"fsdkaggle2018 ({root})")
    labels = sorted(train["label"].unique())

    test = None
    test_dir = _first(root, TEST_DIRS, "dir")
    if test_dir is not None:
        test, test_rejects = _load_test(root, test_dir, set(labels))
        rejects.extend(test_rejects)
    return Dataset(name="fsdkaggle2018", train=train, labels=labels, test=test, rejects=rejects)


def _load_test(root: Path, test_dir: Path, known: set[str]) -> tuple[pd.DataFrame, list[Reject]]:
    """Every WAV in ``test_dir``, with label and usage where a test CSV gives them.

    A CSV row is rejected (the clip itself stays, unlabelled) when its label is not a train
    label, when it repeats an fname, or when its file is missing.
    """
    files = scan_audio(test_dir, [".wav"])
    labels: dict[str, str] = {}
    usage: dict[str, str] = {}
    rejects: list[Reject] = []
    test_csv = _first(root, TEST_CSVS, "file")
    if test_csv is not None:
        table = read_table(test_csv, ["fname"], "test CSV")
        rejects.extend(table.attrs.get("rejects", []))
        name = test_csv.name
        csv_labels = table["label"].tolist() if "label" in table else [""] * len(table)
        csv_usage = table["usage"].tolist() if "usage" in table else [""] * len(table)
        for line, raw_name, raw_label, raw_usage in zip(
            table_lines(table), table["fname"].tolist(), csv_labels, csv_usage
        ):
            fname = text(raw_name)
            where = f"{name} line {line}"
            if not fname:
                rejects.append(Reject(f"{name}:{line}", "metadata", f"empty 'fname' in {where}"))
                continue
            if fname in usage:
                rejects.append(Reject(fname, "metadata", f"duplicate fname in {where}; the "
                                      "first row is kept"))
                continue
            usage[fname] = text(raw_usage)
            if fname not in files:
                _, problem = row_path(fname, files, test_dir)
                if problem == NOT_INSIDE:
                    problem = f"'fname' {NOT_INSIDE}"
                problem = problem or "not a clip of the test folder"
                rejects.append(Reject(fname, "metadata", f"{where}: {problem}"))
                continue
            label = text(raw_label)
            if label.lower() in _NO_LABEL:
                continue
            if label not in known:
                rejects.append(Reject(fname, "metadata", f"test label {label[:20]!r} in {where} "
                                      "is not a train label; the clip is kept unlabelled"))
                continue
            labels[fname] = label
        log.info("%s: %d of %d test clips labelled", name, len(labels), len(files))
    for fname, problem in sorted(files.problems.items()):
        if fname not in usage:  # a folder entry no CSV row names: still say why it is left out
            rejects.append(Reject(fname, "metadata", f"in the test folder: {problem}"))
    rows = [(f, files[f], labels.get(f, ""), usage.get(f, ""))
            for f in sorted(files)]
    return pd.DataFrame(rows, columns=TEST_COLUMNS), rejects
