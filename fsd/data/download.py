"""Download a dataset's archives from Zenodo, verify them, and unzip them into its own layout.

``download_zenodo(dest, record=ZENODO_RECORD, files=FSDKAGGLE2018_FILES, base_url=ZENODO)``:

- reads the record's files API (``<base>/api/records/<id>/files``: every file's name, size,
  ``md5:`` checksum and download link), so the checksums are the publisher's, read at download
  time;
- downloads each archive into ``<dest>/.fsd-download/<name>.part``; an interrupted transfer
  (a dropped connection, a kill, Ctrl-C) is resumed with an HTTP ``Range`` request from where
  the part file ends (a server that ignores the range answers 200 and the part starts over);
- verifies the MD5 (a mismatch deletes the part and downloads it again, up to ``retries``
  times, then fails naming both checksums);
- unzips into a private folder first and moves its top-level entries into ``dest``, so an
  interrupted unzip never looks done; every member must resolve inside that folder (absolute
  names, ``..`` and links are refused: zip-slip safe);
- records ``<dest>/.fsd-download/<name>.done`` (the MD5), so a second run does nothing and
  touches no network; the archive is deleted unless ``keep_archives``.

FSDKaggle2018 (Zenodo record 2552860) unpacks into ``FSDKaggle2018.audio_train/``,
``FSDKaggle2018.audio_test/`` and ``FSDKaggle2018.meta/``, what ``data.source: fsdkaggle2018``
reads with ``data.root: <dest>``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import shutil
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)

ZENODO = "https://zenodo.org"
ZENODO_RECORD = "2552860"
FSDKAGGLE2018_FILES = ("FSDKaggle2018.meta.zip", "FSDKaggle2018.audio_train.zip",
                       "FSDKaggle2018.audio_test.zip")
STATE_DIR = ".fsd-download"
CHUNK = 1 << 20
USER_AGENT = "fsd-download/1 (+python urllib)"


class DownloadError(RuntimeError):
    """A download that could not be completed or verified; rerun to resume."""


@dataclass(frozen=True)
class RemoteFile:
    name: str
    url: str
    md5: str
    size: int | None


def record_files(record: str, base_url: str = ZENODO, timeout: float = 60) -> dict[str, RemoteFile]:
    """Name -> RemoteFile for every file of a Zenodo record (its files API)."""
    base = base_url.rstrip("/")
    url = f"{base}/api/records/{record}/files"
    try:
        with _open(url, timeout=timeout) as resp:
            data = json.loads(resp.read().decode())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DownloadError(f"cannot read the file list of record {record} at {url}: {exc}") from None
    entries = data.get("entries") if isinstance(data, dict) else None
    if entries is None and isinstance(data, dict):
        entries = data.get("files")  # the record's own JSON lists them under "files"
    out: dict[str, RemoteFile] = {}
    for e in entries or []:
        name = str(e.get("key") or e.get("filename") or "")
        checksum = str(e.get("checksum") or "")
        if not name:
            continue
        algo, _, digest = checksum.partition(":")
        links = e.get("links") or {}
        link = links.get("content") or links.get("self") or links.get("download") or \
            f"{base}/records/{record}/files/{urllib.parse.quote(name)}?download=1"
        out[name] = RemoteFile(name=name, url=urllib.parse.urljoin(f"{base}/", link),
                               md5=digest.lower() if algo.lower() == "md5" else "",
                               size=int(e["size"]) if e.get("size") is not None else None)
    return out


def download_zenodo(dest: str | Path, record: str = ZENODO_RECORD,
                    files: tuple[str, ...] = FSDKAGGLE2018_FILES, base_url: str = ZENODO, *,
                    retries: int = 3, keep_archives: bool = False, progress: bool = True,
                    timeout: float = 60) -> list[str]:
    """Fetch, verify and unzip ``files`` of ``record`` into ``dest``; the names it (re)did."""
    dest = Path(dest)
    state = dest / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    todo = [n for n in files if not (state / f"{n}.done").is_file()]
    if not todo:
        log.info("%s: %s already downloaded and unpacked; nothing to do", dest, ", ".join(files))
        return []
    remote = record_files(record, base_url, timeout=timeout)
    missing = [n for n in todo if n not in remote]
    if missing:
        raise DownloadError(f"record {record} has no {', '.join(missing)} (it has "
                            f"{', '.join(sorted(remote)) or 'no files'})")
    for name in todo:
        rf = remote[name]
        if not rf.md5:
            raise DownloadError(f"record {record} gives no MD5 for {name}: refusing to trust it")
        archive = state / name
        if not (archive.is_file() and file_md5(archive) == rf.md5):
            fetch(rf, archive, retries=retries, progress=progress, timeout=timeout)
        unpack(archive, dest)
        (state / f"{name}.done").write_text(rf.md5 + "\n")
        if not keep_archives:
            archive.unlink(missing_ok=True)
        log.info("%s: verified (md5 %s) and unpacked into %s", name, rf.md5, dest)
    return todo


def fetch(rf: RemoteFile, target: Path, *, retries: int = 3, progress: bool = True,
          timeout: float = 60) -> Path:
    """Download ``rf`` to ``target`` (via ``<target>.part``, resumed with Range), MD5-checked."""
    from fsd import progress as progress_bars

    part = target.with_name(target.name + ".part")
    attempts = 0
    while True:
        attempts += 1
        try:
            _transfer(rf, part, progress_bars, progress, timeout)
        except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as exc:
            if attempts > retries:
                raise DownloadError(f"{rf.name}: transfer failed {attempts} times ({exc}); "
                                    f"{_size(part)} bytes kept in {part}, rerun to resume") from None
            log.warning("%s: transfer interrupted at %d bytes (%s); resuming", rf.name,
                        _size(part), exc)
            time.sleep(min(2.0 * attempts, 10.0))
            continue
        got = file_md5(part)
        if got == rf.md5:
            os.replace(part, target)
            return target
        part.unlink(missing_ok=True)
        if attempts > retries:
            raise DownloadError(f"{rf.name}: MD5 {got} != {rf.md5} (the record's) after "
                                f"{attempts} attempts; the corrupt file was deleted")
        log.warning("%s: MD5 %s != %s; downloading it again", rf.name, got, rf.md5)


def _transfer(rf: RemoteFile, part: Path, progress_bars, progress: bool, timeout: float) -> None:
    have = _size(part)
    if rf.size is not None and have > rf.size:  # not a prefix of this file: start over
        part.unlink()
        have = 0
    if rf.size is not None and have == rf.size:
        return
    headers = {"Range": f"bytes={have}-"} if have else {}
    with _open(rf.url, headers=headers, timeout=timeout) as resp:
        if have and resp.status != 206:
            log.info("%s: the server ignored the range; downloading from the start", rf.name)
            have = 0
        elif have:
            start = _range_start(resp.headers.get("Content-Range", ""))
            if start != have:
                raise DownloadError(f"{rf.name}: asked for bytes from {have}, got "
                                    f"{resp.headers.get('Content-Range')!r}")
        length = resp.headers.get("Content-Length")
        total = rf.size if rf.size is not None else (have + int(length) if length else None)
        bar = progress_bars.bar(total=total, initial=have, unit="B", unit_scale=True,
                                unit_divisor=1024, desc=rf.name, enabled=progress)
        try:
            with open(part, "ab" if have else "wb") as fh:
                while True:
                    block = resp.read(CHUNK)
                    if not block:
                        break
                    fh.write(block)
                    bar.update(len(block))
        finally:
            bar.close()
    if rf.size is not None and _size(part) < rf.size:
        raise urllib.error.URLError(f"connection closed at {_size(part)} of {rf.size} bytes")


def _range_start(content_range: str) -> int | None:
    # "bytes 100-999/1000"
    try:
        return int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _open(url: str, headers: dict[str, str] | None = None, timeout: float = 60):
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})
    return urllib.request.urlopen(req, timeout=timeout)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def file_md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def safe_members(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The archive's members, each checked to stay inside the folder it is unpacked into."""
    out = []
    for info in zf.infolist():
        name = info.filename
        p = PurePosixPath(name.replace("\\", "/"))
        mode = info.external_attr >> 16
        if p.is_absolute() or ".." in p.parts or (len(name) > 1 and name[1] == ":"):
            raise DownloadError(f"archive member {name!r} would land outside the folder "
                                "(absolute path or ..): refusing the archive")
        if stat.S_ISLNK(mode):
            raise DownloadError(f"archive member {name!r} is a symbolic link: refusing the archive")
        out.append(info)
    return out


def unpack(archive: Path, dest: Path) -> list[Path]:
    """Unzip ``archive`` into ``dest`` (checked members, private folder first, then moved)."""
    tmp = dest / STATE_DIR / f"unpack-{archive.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    root = tmp.resolve()
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in safe_members(zf):
                target = (root / info.filename).resolve()
                if target != root and root not in target.parents:
                    raise DownloadError(f"archive member {info.filename!r} resolves outside "
                                        "the folder: refusing the archive")
                zf.extract(info, root)
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{archive.name} is not a readable zip ({exc})") from None
    moved = []
    for child in sorted(tmp.iterdir()):
        target = dest / child.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)  # an earlier, unrecorded unpack of the same archive
        elif target.exists() or target.is_symlink():
            target.unlink()
        os.replace(child, target)
        moved.append(target)
    shutil.rmtree(tmp, ignore_errors=True)
    return moved
