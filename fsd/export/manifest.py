"""An export folder's proof of itself: the manifest (``export.json``) lists a SHA-256 for
every file the export wrote (``files``) and one for its label list (``labels_sha256``).

- :func:`read_manifest` parses it bounded (size and nesting checked before the parser runs)
  and checks the keys every reader relies on;
- :func:`verify_export` checks every listed path stays inside the folder (no absolute path,
  no ``..``, no link leading out), every file's hash, the labels' hash, and that the folder
  holds nothing the manifest does not list. ``fsd predict --exported`` runs it before loading
  anything, and ``fsd export`` before it replaces a folder: a folder that does not prove
  itself is never deleted.

The hashes catch a file changed, truncated or swapped after the export (by accident, a
partial copy, or an edit such as reversed labels). They are not a signature: whoever can
rewrite every file can rewrite the manifest too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Any

from fsd.boundedjson import JsonRefused, loads

MANIFEST = "export.json"
EXPORT_FORMAT = "fsd-export-1"
MAX_MANIFEST_BYTES = 4 * 2**20  # a real manifest is a few kB
_REQUIRED = {"format": str, "kind": str, "labels": list, "info": dict, "folds": list,
             "front_end": dict, "files": dict, "labels_sha256": str}


class ExportInvalid(ValueError):
    """An export folder that does not prove itself (the message is one line and names it)."""


def file_sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def labels_sha256(labels: list[str]) -> str:
    return hashlib.sha256(json.dumps(list(labels)).encode()).hexdigest()


def hash_files(folder: Path) -> dict[str, str]:
    """Relative POSIX path -> SHA-256 of every file under ``folder`` but the manifest."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): file_sha256(p)
            for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).as_posix() != MANIFEST}


def empty_dirs(folder: Path) -> list[str]:
    """Folders under ``folder`` holding no file (a SavedModel's ``assets/``): listed so the
    folder still proves itself."""
    folder = Path(folder)
    return [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*"))
            if p.is_dir() and not any(q.is_file() for q in p.rglob("*"))]


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of ``folder``, parsed with its size and depth bounded; an ExportInvalid
    for a missing, oversized, too deep, malformed or incomplete one."""
    folder = Path(folder)
    file = folder / MANIFEST
    if file.is_symlink() or not file.is_file():
        raise ExportInvalid(f"{folder} is not an fsd export: {MANIFEST} is missing")
    with open(file, "rb") as fh:
        raw = fh.read(MAX_MANIFEST_BYTES + 1)
    try:
        manifest = loads(raw, f"{file}", MAX_MANIFEST_BYTES)
    except JsonRefused as exc:
        raise ExportInvalid(str(exc)) from None
    if not isinstance(manifest, dict):
        raise ExportInvalid(f"{file} is not a JSON object")
    if manifest.get("format") != EXPORT_FORMAT:
        raise ExportInvalid(f"{file}: not a manifest of format {EXPORT_FORMAT}")
    for key, kind in _REQUIRED.items():
        if not isinstance(manifest.get(key), kind):
            raise ExportInvalid(f"{file}: {key!r} is missing or not a {kind.__name__} "
                                "(an export from an older fsd? export it again)")
    return manifest


def inside(folder: Path, rel: Any) -> Path:
    """``folder / rel`` for a relative POSIX path that stays inside ``folder`` (no absolute
    path, no ``..``, no link leading out); otherwise an ExportInvalid naming ``rel`` only by
    its length-capped text."""
    shown = repr(rel)[:60]
    if not isinstance(rel, str) or not rel or "\\" in rel or "\0" in rel:
        raise ExportInvalid(f"{folder}: manifest path {shown} is not a relative path")
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or (len(rel) > 1 and rel[1] == ":"):
        raise ExportInvalid(f"{folder}: manifest path {shown} leads outside the export "
                            "folder: refusing the export")
    root = Path(folder).resolve()
    target = (root / p).resolve()
    if root not in target.parents:
        raise ExportInvalid(f"{folder}: manifest path {shown} leads outside the export "
                            "folder (a link?): refusing the export")
    return root / p


def verify_export(folder: Path, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of ``folder`` once every check of this module's docstring holds; the first
    that fails is an ExportInvalid saying what to do."""
    folder = Path(folder)
    manifest = read_manifest(folder) if manifest is None else manifest
    files = manifest["files"]
    for rel, digest in files.items():
        path = inside(folder, rel)
        if path.is_symlink() or not path.is_file():
            raise ExportInvalid(f"{folder}: {rel[:80]} is listed but missing: export again")
        if not isinstance(digest, str) or file_sha256(path) != digest:
            raise ExportInvalid(f"{folder}: {rel[:80]} differs from what was exported (SHA-256 "
                                "mismatch): export again, or copy the folder whole")
    if labels_sha256(manifest["labels"]) != manifest["labels_sha256"]:
        raise ExportInvalid(f"{folder}: the manifest's labels differ from those exported "
                            "(hash mismatch): export again")
    listed = {PurePosixPath(r) for r in files} | {PurePosixPath(MANIFEST)}
    dirs = manifest.get("dirs") or []
    parents = {a for r in listed for a in r.parents} | {
        PurePosixPath(d) for d in (dirs if isinstance(dirs, list) else []) if isinstance(d, str)}
    for p in folder.rglob("*"):
        rel = PurePosixPath(p.relative_to(folder).as_posix())
        if p.is_symlink() or (rel not in listed and not (p.is_dir() and rel in parents)):
            raise ExportInvalid(f"{folder}: {str(rel)[:80]} is not part of the export")
    return manifest
