"""An audio folder plus a CSV with configurable columns (ESC-10, the synthetic sample, ...), or
an audio folder of class subfolders without a CSV (:func:`load_class_folders`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from fsd.data.dataset import (
    Dataset,
    DatasetError,
    Listing,
    build_train,
    read_table,
    require_clips,
    resolve_inside,
    scan_audio,
)
from fsd.data.rejects import Reject

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



# --- a folder of class subfolders (no CSV) ----------------------------------------------------

CLASS_FOLDERS = "class folders"  # stands for the CSV's name in reasons
# Entries one class-folder listing looks at (files and folders, nested junk included): a
# folder of millions of entries is a mistake, not a dataset, and is refused.
MAX_LISTED = 2_000_000


def load_class_folders(audio_dir: str | Path, *, group_column: str = "", name: str = "") -> Dataset:
    """Clips labelled by the immediate subfolder of ``audio_dir`` they sit in: ``dogs/a.wav``
    is clip ``dogs/a.wav`` of class ``dogs`` (the layout of Keras'
    ``audio_dataset_from_directory`` and torchvision's ImageFolder).

    Every file of a class folder is a clip, whatever its format: one soundfile cannot read is
    rejected when featurize decodes it, with the decoder's reason. Left out at listing, each
    with its reason in the rejects: files directly in ``audio_dir`` (outside any class
    folder), files in folders nested inside a class folder, hidden files and folders (a name
    starting with '.'), links that lead out of ``audio_dir`` (a class folder that is such a
    link too) or to nothing, anything that is not a regular file. The rows then go through
    the same checks as a CSV's (:func:`fsd.data.dataset.build_train`); paths are resolved once,
    here, and decoded without following links. Folds are stratified by class; there is no
    CSV, so no groups: ``folds.group_column`` needs a CSV (the config says so).
    """
    audio_dir = Path(audio_dir)
    if not audio_dir.is_dir():
        raise DatasetError(f"data.audio_dir {str(audio_dir)!r} does not exist")
    if group_column:
        raise DatasetError(f"folds.group_column {group_column[:40]!r} needs a CSV that gives "
                           "groups (data.csv); class folders give none")
    files, problems = list_class_folders(audio_dir)
    table = pd.DataFrame({"fname": list(files), "label": [f.split("/", 1)[0] for f in files]},
                         dtype=object)
    train, rejects = build_train(table, files, audio_dir=audio_dir, csv_name=CLASS_FOLDERS)
    rejects = [Reject(f, "metadata", problems[f]) for f in sorted(problems)] + rejects
    ds_name = name or audio_dir.resolve().name
    require_clips(train, rejects, f"{ds_name} ({CLASS_FOLDERS} of {audio_dir})")
    return Dataset(name=ds_name, train=train, labels=sorted(train["label"].unique()),
                   test=None, rejects=rejects)


def list_class_folders(audio_dir: Path) -> tuple[Listing, dict[str, str]]:
    """``class/file`` -> resolved path of every usable file directly in a class folder, in
    sorted order, and ``name`` -> why each other entry is not used (see
    :func:`load_class_folders`). Nothing is decoded and no link is followed out."""
    real_base = os.path.realpath(audio_dir)
    files, problems = Listing(), {}
    files.problems = problems
    seen = 0
    for top in sorted(os.scandir(real_base), key=lambda e: e.name):
        seen += 1
        if top.name.startswith("."):
            problems[top.name] = "hidden (its name starts with '.'): not read"
            continue
        if not top.is_dir(follow_symlinks=True):
            path, problem = resolve_inside(top.path, real_base)
            problems[top.name] = problem or ("not in a class folder: only files inside a "
                                             "subfolder (the class) are read")
            continue
        real_dir, problem = _class_dir(top.path, real_base)
        if real_dir is None:
            problems[top.name + "/"] = problem
            continue
        for entry in sorted(os.scandir(real_dir), key=lambda e: e.name):
            seen += 1
            rel = f"{top.name}/{entry.name}"
            if seen > MAX_LISTED:
                raise DatasetError(f"data.audio_dir holds more than {MAX_LISTED:,} entries in "
                                   "its class folders: refusing it")
            if entry.name.startswith("."):
                problems[rel + ("/" if entry.is_dir(follow_symlinks=False) else "")] = \
                    "hidden (its name starts with '.'): not read"
            elif entry.is_dir(follow_symlinks=False):
                for nested in _nested_files(entry.path, rel, MAX_LISTED - seen):
                    seen += 1
                    problems[nested] = (f"in a folder nested inside class folder "
                                        f"{top.name[:40]!r}: only files directly in a class "
                                        "folder are read")
            else:
                path, problem = resolve_inside(entry.path, real_base)
                if path is None:
                    problems[rel] = problem
                else:
                    files[rel] = path
    if problems:
        first = sorted(problems)[0]
        log.warning("%d entr(ies) of %s are not read (first: %s: %s)", len(problems),
                    audio_dir, first, problems[first])
    return files, problems


def _class_dir(path: str, real_base: str) -> tuple[str | None, str]:
    """A class folder resolved, or None and why not (a link leading out of the folder)."""
    real = os.path.realpath(path)
    if not real.startswith(real_base.rstrip(os.sep) + os.sep) or real == real_base:
        return None, "the class folder is a link that leads outside the audio folder: not read"
    return real, ""


def _nested_files(path: str, rel: str, budget: int) -> list[str]:
    """The files under a nested folder (links not followed), as ``class/sub/.../file``; the
    folder itself (``class/sub/``) when it holds none."""
    out: list[str] = []
    for root, dirs, names in os.walk(path, followlinks=False):
        dirs.sort()
        sub = rel + root[len(path):].replace(os.sep, "/")
        out.extend(f"{sub}/{n}" for n in sorted(names))
        if len(out) > budget:
            raise DatasetError(f"data.audio_dir holds more than {MAX_LISTED:,} entries in its "
                               "class folders: refusing it")
    return out or [rel + "/"]
