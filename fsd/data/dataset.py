"""One dataset interface over three sources: FSDKaggle2018's layout, a folder + CSV, the sample.

Loading reads metadata and directory listings only (``os.scandir``/``stat``), never audio, so
the full dataset (9.5k train + 9.4k test clips) loads in about a second. Whatever is wrong with
the metadata becomes a :class:`Reject` with stage ``metadata``; only problems that leave
nothing sensible to load (a missing folder, a CSV without a required column, no usable clip)
raise :class:`DatasetError`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fsd.data.rejects import Reject

log = logging.getLogger(__name__)

TRAIN_COLUMNS = ["fname", "path", "label", "verified", "fold"]
TEST_COLUMNS = ["fname", "path", "label", "usage"]

# What a folder listing counts as a clip (anything libsndfile decodes that datasets ship).
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".w64",
     ".caf"}
)

_TRUE = frozenset({"1", "true", "t", "yes", "y", "1.0"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "0.0"})


class DatasetError(ValueError):
    """Metadata that cannot be loaded at all (a missing folder or file, a missing column)."""


@dataclass
class Dataset:
    """Clips with labels, ready to featurize.

    ``train``: one row a usable clip: fname (unique), path (absolute), label (a name in
    ``labels``), verified (bool), fold (int; -1 where the dataset gives none).
    ``test``: optional unlabelled (or scored) clips: fname, path, label ('' if unknown),
    usage (Public/Private/Ignored or '').
    ``rejects``: metadata rows that were left out, with reasons.
    """

    name: str
    train: pd.DataFrame
    labels: list[str]
    test: pd.DataFrame | None = None
    rejects: list[Reject] = field(default_factory=list)

    def fingerprint(self) -> str:
        """A hash of what the clips are (names, labels, folds, file sizes and mtimes).

        Files are stat'ed now, not at load time, so a clip replaced since loading changes it.
        """
        rows: list[list] = []
        for split, frame in (("train", self.train), ("test", self.test)):
            if frame is None:
                continue
            folds = frame["fold"] if "fold" in frame else [None] * len(frame)
            verified = frame["verified"] if "verified" in frame else [None] * len(frame)
            for fname, path, label, fold, ver in zip(
                frame["fname"], frame["path"], frame["label"], folds, verified
            ):
                try:
                    st = os.stat(path)
                    size, mtime = st.st_size, st.st_mtime_ns
                except OSError:
                    size, mtime = -1, -1
                rows.append([
                    split, str(fname), str(label),
                    None if fold is None else int(fold),
                    None if ver is None else bool(ver),
                    size, mtime,
                ])
        rows.sort(key=lambda r: (r[0], r[1]))
        payload = json.dumps(rows, separators=(",", ":")).encode()
        return hashlib.sha256(payload).hexdigest()[:16]

    def summary(self) -> str:
        n_test = 0 if self.test is None else len(self.test)
        return (f"{self.name}: {len(self.train)} train clips, {len(self.labels)} labels, "
                f"{n_test} test clips, {len(self.rejects)} rejects")


# --- helpers shared by the loaders -------------------------------------------------------


def read_table(path: Path, required: Iterable[str], what: str) -> pd.DataFrame:
    """Read a CSV as strings; a missing file or a missing column is a DatasetError."""
    if not path.is_file():
        raise DatasetError(f"{what} {str(path)!r} does not exist")
    try:
        table = pd.read_csv(path, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{what} {str(path)!r} is not a readable CSV: {exc}") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in required if c and c not in table.columns]
    if missing:
        raise DatasetError(
            f"{what} {str(path)!r} lacks column(s) {', '.join(map(repr, missing))}; "
            f"it has: {', '.join(map(repr, table.columns))}"
        )
    return table


class Listing(dict):
    """File name -> path, plus ``escaped``: the names of links that lead out of the folder."""

    escaped: frozenset[str] = frozenset()


def scan_audio(directory: Path, extensions: Iterable[str] = AUDIO_EXTENSIONS) -> Listing:
    """File name -> absolute path of every audio file directly in ``directory`` (no decoding).

    A symlink whose target lies outside the folder is left out (its name in ``.escaped``)."""
    if not directory.is_dir():
        raise DatasetError(f"audio folder {str(directory)!r} does not exist")
    exts = {e.lower() for e in extensions}
    base = os.path.abspath(directory)
    real_base = os.path.realpath(base)
    files = Listing()
    escaped: set[str] = set()
    with os.scandir(base) as it:
        for entry in it:
            if os.path.splitext(entry.name)[1].lower() in exts and entry.is_file():
                path = os.path.join(base, entry.name)
                # a symlink in the folder that points outside it is not the folder's clip
                if entry.is_symlink() and not inside(path, real_base):
                    escaped.add(entry.name)
                    continue
                files[entry.name] = path
    if escaped:
        log.warning("%d link(s) in %s lead outside it and are not read (first: %s)",
                    len(escaped), directory, sorted(escaped)[0])
    files.escaped = frozenset(escaped)
    return files


def inside(path: str | os.PathLike, real_base: str) -> bool:
    """Whether ``path`` resolves (symlinks followed) to something inside the folder
    ``real_base`` (itself already resolved with ``os.path.realpath``)."""
    try:
        real = os.path.realpath(path)
    except (OSError, ValueError):
        return False
    return real == real_base or real.startswith(real_base.rstrip(os.sep) + os.sep)


def confined_path(audio_dir: Path, fname: str) -> str | None:
    """The file a CSV's relative ``fname`` names under ``audio_dir``, or None when it is
    absolute, climbs out (``..``), contains a NUL, or resolves (links followed) outside the
    folder. The returned path is the folder's own spelling, not the resolved target."""
    if "\x00" in fname or os.path.isabs(fname) or fname.startswith(("/", "\\", "~")):
        return None
    parts = fname.replace("\\", "/").split("/")
    if any(p == ".." for p in parts) or (len(fname) > 1 and fname[1] == ":"):
        return None
    base = os.path.abspath(audio_dir)
    candidate = os.path.normpath(os.path.join(base, fname))
    if not inside(candidate, os.path.realpath(base)):
        return None
    return candidate


def text(value: object) -> str:
    """A CSV cell as stripped text; NaN (pandas' empty cell) becomes ''."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    return str(value).strip()


def parse_verified(value: object) -> bool | None:
    """'1'/'0', 'True'/'False', 'yes'/'no' -> bool; anything else -> None."""
    t = text(value).lower()
    if t in _TRUE:
        return True
    if t in _FALSE:
        return False
    return None


def parse_fold(value: object) -> int | None:
    """A non-negative integer (also written '3.0'); anything else -> None."""
    t = text(value)
    try:
        f = float(t)
    except ValueError:
        return None
    if not math.isfinite(f) or not f.is_integer() or f < 0:
        return None
    return int(f)


def build_train(
    table: pd.DataFrame,
    files: dict[str, str],
    *,
    audio_dir: Path,
    csv_name: str,
    file_column: str = "fname",
    label_column: str = "label",
    verified_column: str = "",
    fold_column: str = "",
    group_column: str = "",
) -> tuple[pd.DataFrame, list[Reject]]:
    """Turn metadata rows + a folder listing into the train frame and its rejects.

    Rows keep the CSV's order (fold assignment depends on it). The first row of a duplicated
    fname wins. Audio files in the folder that no row names are rejected too, so that the
    rejects report accounts for every file. Fold values are mapped to 0-based ranks of the
    distinct values (ESC-10's 1..5 -> 0..4). With ``group_column`` the frame gains a ``group``
    column (a blank value makes the clip a group of its own) for group-aware folds.
    """
    n = len(table)
    names = table[file_column].tolist()
    labels = table[label_column].tolist()
    verified = table[verified_column].tolist() if verified_column else [True] * n
    folds = table[fold_column].tolist() if fold_column else [None] * n
    groups = table[group_column].tolist() if group_column else [None] * n

    rejects: list[Reject] = []
    seen: set[str] = set()
    rows: list[tuple[str, str, str, bool, int]] = []
    row_groups: list[str] = []
    for i, (raw_name, raw_label, raw_ver, raw_fold, raw_group) in enumerate(
        zip(names, labels, verified, folds, groups)
    ):
        line = i + 2  # the header is line 1
        fname = text(raw_name)
        if not fname:
            rejects.append(Reject(f"{csv_name}:{line}", "metadata",
                                  f"empty {file_column!r} in {csv_name} line {line}"))
            continue
        if fname in seen:
            rejects.append(Reject(fname, "metadata", f"duplicate fname in {csv_name} line "
                                  f"{line}; the first row is kept"))
            continue
        seen.add(fname)
        path = files.get(fname)
        if fname in getattr(files, "escaped", ()):
            rejects.append(Reject(fname, "metadata", f"{csv_name} line {line}: the file is a "
                                  "link that leads outside the audio folder"))
            continue
        if path is None and _looks_like_path(fname):
            path = confined_path(audio_dir, fname)
            if path is None:
                rejects.append(Reject(fname, "metadata", f"{csv_name} line {line}: "
                                      f"{file_column!r} must name a file inside the audio "
                                      "folder (no absolute path, '..' or link leading out)"))
                continue
            path = path if os.path.isfile(path) else None
        if path is None:
            rejects.append(Reject(fname, "metadata",
                                  f"listed in {csv_name} but no such file in {audio_dir}"))
            continue
        label = text(raw_label)
        if not label:
            rejects.append(Reject(fname, "metadata", f"empty label in {csv_name} line {line}"))
            continue
        ver = parse_verified(raw_ver) if verified_column else True
        if ver is None:
            rejects.append(Reject(fname, "metadata", f"bad {verified_column!r} value "
                                  f"{text(raw_ver)!r} (need 1/0 or true/false)"))
            continue
        fold = -1
        if fold_column:
            parsed = parse_fold(raw_fold)
            if parsed is None:
                rejects.append(Reject(fname, "metadata", f"bad {fold_column!r} value "
                                      f"{text(raw_fold)!r} (need a non-negative integer)"))
                continue
            fold = parsed
        rows.append((fname, path, label, ver, fold))
        row_groups.append(text(raw_group) or fname)

    for fname in sorted(set(files) - seen):
        rejects.append(Reject(fname, "metadata", f"audio file not listed in {csv_name}"))

    train = pd.DataFrame(rows, columns=TRAIN_COLUMNS)
    train["verified"] = train["verified"].astype(bool)
    train["fold"] = train["fold"].astype("int64")
    if group_column:
        train["group"] = row_groups
    if fold_column and len(train):
        distinct = sorted(train["fold"].unique())
        mapping = {int(v): k for k, v in enumerate(distinct)}
        if any(k != v for v, k in mapping.items()):
            log.info("%s: fold values %s mapped to 0..%d", csv_name, [int(v) for v in distinct],
                     len(distinct) - 1)
        train["fold"] = train["fold"].map(mapping).astype("int64")
    return train, rejects


def _looks_like_path(fname: str) -> bool:
    return ("/" in fname or os.sep in fname or "\\" in fname or "\x00" in fname
            or fname.startswith("~") or os.path.isabs(fname) or fname in (".", ".."))


def limit_round_robin(train: pd.DataFrame, max_clips: int) -> pd.DataFrame:
    """At most ``max_clips`` rows, dealt one class at a time so every class keeps clips.

    Round r takes each class's r-th clip (classes in sorted order, clips in row order); the
    kept rows stay in their original order.
    """
    if max_clips <= 0 or len(train) <= max_clips:
        return train
    train = train.reset_index(drop=True)
    groups = [list(pos) for _, pos in sorted(train.groupby("label").indices.items())]
    if max_clips < len(groups):
        log.warning("data.max_clips=%d is below the %d classes; some classes get no clip",
                    max_clips, len(groups))
    keep: list[int] = []
    depth = 0
    while len(keep) < max_clips:
        for g in groups:
            if depth < len(g):
                keep.append(int(g[depth]))
                if len(keep) == max_clips:
                    break
        depth += 1
    return train.iloc[sorted(keep)].reset_index(drop=True)


def require_clips(train: pd.DataFrame, rejects: list[Reject], where: str) -> None:
    """No usable train clip at all is an error; say why with the first rejects."""
    if len(train):
        return
    reasons = "; ".join(f"{r.fname}: {r.reason}" for r in rejects[:3])
    raise DatasetError(f"{where}: no usable train clip ({len(rejects)} rows rejected"
                       f"{': ' + reasons if reasons else ''})")
