"""One dataset interface over three sources: FSDKaggle2018's layout, a folder + CSV, the sample.

Loading reads metadata and directory listings only (``os.scandir``/``stat``), never audio, so
the full dataset (9.5k train + 9.4k test clips) loads in about a second. Whatever is wrong with
the metadata becomes a :class:`Reject` with stage ``metadata``; only problems that leave
nothing sensible to load (a missing folder, a CSV without a required column, no usable clip)
raise :class:`DatasetError`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import stat
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

MAX_CSV_BYTES = 256 * 2**20
# Cells read as empty, as pandas' read_csv does by default (a label "NaN" is no label).
NA_CELLS = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan",
                      "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a",
                      "nan", "null"})


def read_table(path: Path, required: Iterable[str], what: str) -> pd.DataFrame:
    """Read a CSV as strings, one physical line a row; a missing file, an unreadable header or
    a missing column is a DatasetError. A malformed data row (more fields than the header, an
    unclosed quote, bytes that are not UTF-8, a NUL) is left out and listed in
    ``table.attrs["rejects"]`` with its line number and reason; ``table.attrs["lines"]`` holds
    each kept row's line number (the header is line 1). A quoted field cannot span lines."""
    if not path.is_file():
        raise DatasetError(f"{what} {str(path)!r} does not exist")
    if path.stat().st_size > MAX_CSV_BYTES:
        raise DatasetError(f"{what} {str(path)!r} is larger than {MAX_CSV_BYTES} bytes")
    raw = path.read_bytes().split(b"\n")
    lines = [(n, line.rstrip(b"\r")) for n, line in enumerate(raw, start=1)]
    lines = [(n, line) for n, line in lines if line.strip()]
    if not lines:
        raise DatasetError(f"{what} {str(path)!r} is not a readable CSV: it is empty")
    (hn, head), body = lines[0], lines[1:]
    header, problem = _csv_line(head, encoding="utf-8-sig")
    if header is None:
        raise DatasetError(f"{what} {str(path)!r} is not a readable CSV: line {hn}: {problem}")
    columns = [c.strip() for c in header]
    missing = [c for c in required if c and c not in columns]
    if missing:
        raise DatasetError(
            f"{what} {str(path)!r} lacks column(s) {', '.join(map(repr, missing))}; "
            f"it has: {', '.join(repr(c[:40]) for c in columns[:20])}"
        )
    rows, kept_lines, rejects = [], [], []
    for n, line in body:
        fields, problem = _csv_line(line)
        if fields is not None and len(fields) > len(columns):
            fields, problem = None, (f"{len(fields)} fields where the header has "
                                     f"{len(columns)}")
        if fields is None:
            rejects.append(Reject(f"{path.name}:{n}", "metadata",
                                  f"malformed row in {path.name} line {n}: {problem}"))
            continue
        fields = ["" if f.strip() in NA_CELLS else f for f in fields]
        rows.append(fields + [""] * (len(columns) - len(fields)))
        kept_lines.append(n)
    table = pd.DataFrame(rows, columns=_unique(columns), dtype=object)
    table.attrs["lines"] = kept_lines
    table.attrs["rejects"] = rejects
    if rejects:
        log.warning("%s: %d malformed row(s) left out (first: %s)", path.name, len(rejects),
                    rejects[0].reason)
    return table


def _unique(columns: list[str]) -> list[str]:
    """Repeated header names become ``x``, ``x.1``, ... (as pandas names them)."""
    out: list[str] = []
    for c in columns:
        name, k = c, 0
        while name in out:
            k += 1
            name = f"{c}.{k}"
        out.append(name)
    return out


def _csv_line(line: bytes, encoding: str = "utf-8") -> tuple[list[str] | None, str]:
    """One physical CSV line's fields, or None and why it cannot be read."""
    try:
        text_line = line.decode(encoding)
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text (byte {exc.start + 1})"
    if "\x00" in text_line:
        return None, "contains a NUL byte"
    try:
        rows = list(csv.reader([text_line], strict=True))
    except csv.Error as exc:
        reason = "an unclosed quote" if "end of data" in str(exc) else "not valid CSV"
        return None, reason
    return (rows[0] if rows else []), ""


class Listing(dict):
    """File name -> resolved path of each usable audio file, plus ``problems``: file name ->
    why a file of the folder is not used (a link leading out, a missing target, not a regular
    file); ``escaped``: the names of links that lead out of the folder."""

    problems: dict[str, str]
    escaped: frozenset[str] = frozenset()


def scan_audio(directory: Path, extensions: Iterable[str] = AUDIO_EXTENSIONS) -> Listing:
    """File name -> resolved absolute path of every audio file directly in ``directory`` (no
    decoding). Each path is resolved once, here: a link inside the folder is replaced by its
    target, and the decoder opens exactly that path without following links
    (:func:`fsd.data.audio.open_checked`), so a file swapped for a link later is not read.

    A link whose target lies outside the folder, a link to nothing and anything that is not
    a regular file are left out, each with its reason in ``.problems``."""
    if not directory.is_dir():
        raise DatasetError(f"audio folder {str(directory)!r} does not exist")
    exts = {e.lower() for e in extensions}
    real_base = os.path.realpath(directory)
    files = Listing()
    problems: dict[str, str] = {}
    escaped: set[str] = set()
    with os.scandir(real_base) as it:
        for entry in it:
            if os.path.splitext(entry.name)[1].lower() not in exts:
                continue
            path, problem = resolve_inside(os.path.join(real_base, entry.name), real_base)
            if path is None:
                problems[entry.name] = problem
                if problem == LEADS_OUT:
                    escaped.add(entry.name)
                continue
            files[entry.name] = path
    if problems:
        first = sorted(problems)[0]
        log.warning("%d file(s) in %s are not read (first: %s: %s)", len(problems), directory,
                    first, problems[first])
    files.problems = problems
    files.escaped = frozenset(escaped)
    return files


LEADS_OUT = "the file is a link that leads outside the audio folder"


def resolve_inside(path: str, real_base: str) -> tuple[str | None, str]:
    """``path`` resolved (links followed) when it is a regular file inside ``real_base``
    (already resolved); else None and the reason."""
    try:
        real = os.path.realpath(path)
    except (OSError, ValueError):
        return None, "the path cannot be resolved"
    try:
        st = os.stat(real)
    except OSError:
        return None, ("the file is a link to nothing (its target is missing)"
                      if os.path.islink(path) else "no such file in the audio folder")
    if not (real == real_base or real.startswith(real_base.rstrip(os.sep) + os.sep)):
        return None, LEADS_OUT
    if not stat.S_ISREG(st.st_mode):
        return None, "not a regular file"
    return real, ""


def inside(path: str | os.PathLike, real_base: str) -> bool:
    """Whether ``path`` resolves (symlinks followed) to something inside the folder
    ``real_base`` (itself already resolved with ``os.path.realpath``)."""
    try:
        real = os.path.realpath(path)
    except (OSError, ValueError):
        return False
    return real == real_base or real.startswith(real_base.rstrip(os.sep) + os.sep)


NOT_INSIDE = "must name a file inside the audio folder (no absolute path or '..')"


def confined_path(audio_dir: Path, fname: str) -> tuple[str | None, str]:
    """The resolved file a CSV's relative ``fname`` names under ``audio_dir``, or None and the
    reason: an absolute path, a ``..``, a NUL, a link leading out of the folder, a missing
    file, not a regular file."""
    if "\x00" in fname or os.path.isabs(fname) or fname.startswith(("/", "\\", "~")):
        return None, NOT_INSIDE
    parts = fname.replace("\\", "/").split("/")
    if any(p == ".." for p in parts) or (len(fname) > 1 and fname[1] == ":"):
        return None, NOT_INSIDE
    real_base = os.path.realpath(audio_dir)
    return resolve_inside(os.path.join(real_base, fname), real_base)


def row_path(fname: str, files: Listing, audio_dir: Path) -> tuple[str | None, str]:
    """The resolved path of the file a CSV row names, or None and why not."""
    if fname in files:
        return files[fname], ""
    problems = getattr(files, "problems", {})
    if fname in problems:
        return None, problems[fname]
    if _looks_like_path(fname):
        return confined_path(audio_dir, fname)
    return None, "no such file in the audio folder"


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


def table_lines(table: pd.DataFrame) -> list[int]:
    """Each row's CSV line number (:func:`read_table`), or row + 2 for a frame built else how."""
    lines = table.attrs.get("lines")
    return list(lines) if lines is not None and len(lines) == len(table) else \
        [i + 2 for i in range(len(table))]


@dataclass
class _Columns:
    file: str
    label: str
    verified: str
    fold: str


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
    column (a blank value makes the clip a group of its own) for group-aware folds. Rows
    :func:`read_table` could not parse come first in the rejects.
    """
    cols = _Columns(file_column, label_column, verified_column, fold_column)
    rejects: list[Reject] = list(table.attrs.get("rejects", []))
    seen: set[str] = set()
    rows: list[tuple[str, str, str, bool, int]] = []
    row_groups: list[str] = []
    groups = table[group_column].tolist() if group_column else [None] * len(table)
    for line, record, raw_group in zip(table_lines(table), table.to_dict("records"), groups):
        row, reject = _train_row(record, line, files, audio_dir, csv_name, cols, seen)
        if reject is not None:
            rejects.append(reject)
            continue
        rows.append(row)
        row_groups.append(text(raw_group) or row[0])
    listed = seen | set(getattr(files, "problems", {}))
    for fname in sorted(set(files) - listed):
        rejects.append(Reject(fname, "metadata", f"audio file not listed in {csv_name}"))
    return _train_frame(rows, row_groups if group_column else None, csv_name, bool(fold_column)), \
        rejects


def _train_row(record: dict, line: int, files, audio_dir: Path, csv_name: str, cols: _Columns,
               seen: set[str]) -> tuple[tuple | None, Reject | None]:
    """One CSV row checked: (fname, path, label, verified, fold), or its reject."""
    fname = text(record.get(cols.file))
    where = f"{csv_name} line {line}"
    if not fname:
        return None, Reject(f"{csv_name}:{line}", "metadata", f"empty {cols.file!r} in {where}")
    if fname in seen:
        return None, Reject(fname, "metadata", f"duplicate fname in {where}; the first row is "
                            "kept")
    seen.add(fname)
    path, problem = row_path(fname, files, audio_dir)
    if path is None:
        if problem == NOT_INSIDE:
            problem = f"{cols.file!r} {NOT_INSIDE}"
        return None, Reject(fname, "metadata", f"{where}: {problem}")
    label = text(record.get(cols.label))
    if not label:
        return None, Reject(fname, "metadata", f"empty label in {where}")
    ver = parse_verified(record.get(cols.verified)) if cols.verified else True
    if ver is None:
        return None, Reject(fname, "metadata", f"bad {cols.verified!r} value "
                            f"{_cell(record.get(cols.verified))} in {where} (need 1/0 or "
                            "true/false)")
    fold = -1
    if cols.fold:
        parsed = parse_fold(record.get(cols.fold))
        if parsed is None:
            return None, Reject(fname, "metadata", f"bad {cols.fold!r} value "
                                f"{_cell(record.get(cols.fold))} in {where} (need a "
                                "non-negative integer)")
        fold = parsed
    return (fname, path, label, ver, fold), None


def _cell(value: object, limit: int = 20) -> str:
    """A cell quoted in a reason: at most ``limit`` characters of it."""
    t = text(value)
    return repr(t if len(t) <= limit else t[:limit] + "...")


def _train_frame(rows: list[tuple], groups: list[str] | None, csv_name: str,
                 has_folds: bool) -> pd.DataFrame:
    """The train frame of the kept rows; dataset fold values mapped to 0-based ranks."""
    train = pd.DataFrame(rows, columns=TRAIN_COLUMNS)
    train["verified"] = train["verified"].astype(bool)
    train["fold"] = train["fold"].astype("int64")
    if groups is not None:
        train["group"] = groups
    if has_folds and len(train):
        distinct = sorted(train["fold"].unique())
        mapping = {int(v): k for k, v in enumerate(distinct)}
        if any(k != v for v, k in mapping.items()):
            log.info("%s: fold values %s mapped to 0..%d", csv_name, [int(v) for v in distinct],
                     len(distinct) - 1)
        train["fold"] = train["fold"].map(mapping).astype("int64")
    return train


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
