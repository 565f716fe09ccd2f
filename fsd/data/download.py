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
import logging
import os
import shutil
import stat
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fsd.boundedjson import loads as bounded_loads

log = logging.getLogger(__name__)
# Seconds before the n-th retry of an interrupted transfer: n times this, at most 5 times.
RETRY_WAIT_S = 2.0

ZENODO = "https://zenodo.org"
ZENODO_RECORD = "2552860"
FSDKAGGLE2018_FILES = ("FSDKaggle2018.meta.zip", "FSDKaggle2018.audio_train.zip",
                       "FSDKaggle2018.audio_test.zip")
STATE_DIR = ".fsd-download"
CHUNK = 1 << 20
MAX_LIST_BYTES = 16 * 2**20  # the files API answer
# A file the list gives no size for is fetched up to this many bytes, then refused (the
# largest FSDKaggle2018 archive is ~2.4 GiB); a sized one stops at its declared size.
MAX_UNSIZED_BYTES = 16 * 2**30
USER_AGENT = "fsd-download/1 (+python urllib)"


class DownloadError(RuntimeError):
    """A download that could not be completed or verified; rerun to resume."""


@dataclass(frozen=True)
class RemoteFile:
    name: str
    url: str
    md5: str
    size: int | None


def check_url(url: str, allow_http: bool = False, what: str = "a link") -> str:
    """``url`` when its scheme is https (or http with ``allow_http``); else a DownloadError.
    No ``file:``, ``ftp:`` or other scheme: a file list cannot make the download read local
    files or devices."""
    if not isinstance(url, str) or len(url) > 4096:
        raise DownloadError(f"{what} is not a URL")
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    allowed = ("https", "http") if allow_http else ("https",)
    if scheme not in allowed or not urllib.parse.urlsplit(url).netloc:
        shown = scheme[:10] + ":" if scheme else "no scheme"
        raise DownloadError(f"{what} uses {shown}; only {' or '.join(allowed)} URLs are "
                            f"fetched{'' if allow_http else ' (--allow-http for a test server)'}")
    return url


def record_files(record: str, base_url: str = ZENODO, timeout: float = 60, *,
                 allow_http: bool = False) -> dict[str, RemoteFile]:
    """Name -> RemoteFile for every file of a Zenodo record (its files API). A list that is
    not what the API returns (entries that are not objects, a size that is not a count, links
    that are not an object of URLs, a link that is not https) is a DownloadError."""
    base = check_url(base_url, allow_http, "the base URL").rstrip("/")
    url = f"{base}/api/records/{record}/files"
    try:
        with _open(url, timeout=timeout) as resp:
            raw = resp.read(MAX_LIST_BYTES + 1)
        data = bounded_loads(raw, "the answer", MAX_LIST_BYTES)  # depth checked first
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        raise DownloadError(f"cannot read the file list of record {record} at {url}: "
                            f"{str(exc)[:200]}") from None
    entries = data.get("entries") if isinstance(data, dict) else None
    if entries is None and isinstance(data, dict):
        entries = data.get("files")  # the record's own JSON lists them under "files"
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise DownloadError(f"the file list of record {record} is not a list of files")
    out: dict[str, RemoteFile] = {}
    for i, e in enumerate(entries):
        rf = _entry(e, i, base, record, allow_http)
        if rf is not None:
            out[rf.name] = rf
    return out


def _entry(e, i: int, base: str, record: str, allow_http: bool) -> RemoteFile | None:
    """One entry of the files API checked, or None for an entry without a name."""
    what = f"entry {i} of record {record}'s file list"
    if not isinstance(e, dict):
        raise DownloadError(f"{what} is not an object")
    name = e.get("key") or e.get("filename") or ""
    if not isinstance(name, str) or len(name) > 255:
        raise DownloadError(f"{what} has a name that is not text")
    if not name:
        return None
    checksum = e.get("checksum") or ""
    if not isinstance(checksum, str):
        raise DownloadError(f"{what} has a checksum that is not text")
    algo, _, digest = checksum.partition(":")
    size = e.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise DownloadError(f"{what} has a size that is not a byte count")
    links = e.get("links")
    if links is None:
        links = {}
    if not isinstance(links, dict):
        raise DownloadError(f"{what} has links that are not an object")
    link = links.get("content") or links.get("self") or links.get("download") or \
        f"{base}/records/{record}/files/{urllib.parse.quote(name)}?download=1"
    if not isinstance(link, str):
        raise DownloadError(f"{what} has a link that is not a URL")
    url = check_url(urllib.parse.urljoin(f"{base}/", link), allow_http, f"{what}'s link")
    return RemoteFile(name=name, url=url,
                      md5=digest.lower() if algo.lower() == "md5" else "", size=size)


def download_zenodo(dest: str | Path, record: str = ZENODO_RECORD,
                    files: tuple[str, ...] = FSDKAGGLE2018_FILES, base_url: str = ZENODO, *,
                    retries: int = 3, keep_archives: bool = False, progress: bool = True,
                    timeout: float = 60, allow_http: bool = False,
                    max_unsized: int = MAX_UNSIZED_BYTES) -> list[str]:
    """Fetch, verify and unzip ``files`` of ``record`` into ``dest``; the names it (re)did.

    Only https is fetched (``allow_http``: also http, for a test server); a file stops at its
    declared size, or at ``max_unsized`` bytes when the list declares none."""
    check_url(base_url, allow_http, "the base URL")
    dest = Path(dest)
    state = dest / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    todo = [n for n in files if not (state / f"{n}.done").is_file()]
    if not todo:
        log.info("%s: %s already downloaded and unpacked; nothing to do", dest, ", ".join(files))
        return []
    remote = record_files(record, base_url, timeout=timeout, allow_http=allow_http)
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
            fetch(rf, archive, retries=retries, progress=progress, timeout=timeout,
                  max_unsized=max_unsized)
        unpack(archive, dest)
        (state / f"{name}.done").write_text(rf.md5 + "\n")
        if not keep_archives:
            archive.unlink(missing_ok=True)
        log.info("%s: verified (md5 %s) and unpacked into %s", name, rf.md5, dest)
    return todo


def fetch(rf: RemoteFile, target: Path, *, retries: int = 3, progress: bool = True,
          timeout: float = 60, max_unsized: int = MAX_UNSIZED_BYTES) -> Path:
    """Download ``rf`` to ``target`` (via ``<target>.part``, resumed with Range), MD5-checked."""
    from fsd import progress as progress_bars

    part = target.with_name(target.name + ".part")
    attempts = 0
    while True:
        attempts += 1
        try:
            _transfer(rf, part, progress_bars, progress, timeout, max_unsized)
        except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as exc:
            if attempts > retries:
                raise DownloadError(f"{rf.name}: transfer failed {attempts} times ({exc}); "
                                    f"{_size(part)} bytes kept in {part}, rerun to resume") from None
            log.warning("%s: transfer interrupted at %d bytes (%s); resuming", rf.name,
                        _size(part), exc)
            time.sleep(min(RETRY_WAIT_S * attempts, 5 * RETRY_WAIT_S))
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


def _transfer(rf: RemoteFile, part: Path, progress_bars, progress: bool, timeout: float,
              max_unsized: int = MAX_UNSIZED_BYTES) -> None:
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
        limit = rf.size if rf.size is not None else max_unsized
        try:
            with open(part, "ab" if have else "wb") as fh:
                while have < limit:  # never past the declared size (or the cap)
                    block = resp.read(min(CHUNK, limit - have))
                    if not block:
                        break
                    fh.write(block)
                    have += len(block)
                    bar.update(len(block))
                over = have >= limit and rf.size is None and resp.read(1)
        finally:
            bar.close()
    if rf.size is None and over:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{rf.name}: the record gives no size and the server sent more "
                            f"than {max_unsized} bytes: refusing it")
    if rf.size is not None and _size(part) < rf.size:
        raise urllib.error.URLError(f"connection closed at {_size(part)} of {rf.size} bytes")


def _range_start(content_range: str) -> int | None:
    # "bytes 100-999/1000"
    try:
        return int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _open(url: str, headers: dict[str, str] | None = None, timeout: float = 60):
    if urllib.parse.urlsplit(url).scheme.lower() not in ("https", "http"):  # checked before
        raise DownloadError("only http(s) URLs are fetched")
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


def unpack(archive: Path, dest: Path, tops: tuple[str, ...] | None = None) -> list[Path]:
    """Unzip ``archive`` into ``dest``: checked members into a private folder first, then its
    top-level folders ``tops`` (default: the archive's name without ``.zip``, which is how
    Zenodo's FSDKaggle2018 archives are laid out) are moved into ``dest``.

    Members outside ``tops`` are not unpacked (a member ``precious/x`` cannot touch
    ``DEST/precious``, nor ``.fsd-download/x`` the download's state). Nothing in ``dest`` is
    ever removed or replaced: a folder already there is kept when it holds exactly the
    archive's files (an interrupted unpack that got as far as moving it), and anything else
    there is a DownloadError."""
    tops = tuple(tops) if tops is not None else (archive.name.removesuffix(".zip"),)
    state = dest / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    # a fresh private folder (never one found there: that could be anything)
    tmp = Path(tempfile.mkdtemp(prefix=f"unpack-{archive.name}-", dir=state))
    try:
        return _unpack_into(archive, dest, tops, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _unpack_into(archive: Path, dest: Path, tops: tuple[str, ...], tmp: Path) -> list[Path]:
    root = tmp.resolve()
    skipped: set[str] = set()
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in safe_members(zf):
                top = PurePosixPath(info.filename.replace("\\", "/")).parts[0]
                if top not in tops:
                    skipped.add(top)
                    continue
                target = (root / info.filename).resolve()
                if target != root and root not in target.parents:
                    raise DownloadError(f"archive member {info.filename[:80]!r} resolves "
                                        "outside the folder: refusing the archive")
                zf.extract(info, root)
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{archive.name} is not a readable zip ({exc})") from None
    if skipped:
        log.warning("%s: %d top-level entr%s outside %s not unpacked (first: %r)", archive.name,
                    len(skipped), "y" if len(skipped) == 1 else "ies", ", ".join(tops),
                    sorted(skipped)[0][:80])
    children = sorted(tmp.iterdir())
    if not children:
        raise DownloadError(f"{archive.name} holds nothing under {', '.join(tops)}")
    # A folder already in dest is never removed: it is kept when its files are exactly this
    # archive's (the same names, sizes and CRC-32s: an interrupted unpack that moved it
    # already), and otherwise the unpack stops. No marker can vouch for a folder: a stale
    # one would let the download replace a folder the user made since.
    keep, clash = [], []
    for child in children:
        target = dest / child.name
        if not (target.exists() or target.is_symlink()):
            continue
        if _matches(target, child):
            keep.append(child)
        else:
            clash.append(target)
    if clash:
        raise DownloadError(f"{clash[0]} already exists and is not exactly what {archive.name} "
                            "holds: move it away and rerun (nothing was replaced)")
    moved = []
    for child in children:
        target = dest / child.name
        if child not in keep:
            os.rename(child, target)  # a name that does not exist: nothing is replaced
        moved.append(target)
    return moved


def _matches(target: Path, fresh: Path) -> bool:
    """Whether ``target`` holds exactly the files of ``fresh`` (a just-unpacked copy): the same
    relative names, no links, no other entries, the same sizes and CRC-32s."""
    if target.is_symlink() or fresh.is_dir() != target.is_dir():
        return False
    if not fresh.is_dir():
        return _same_file(fresh, target)
    want = {p.relative_to(fresh): p for p in fresh.rglob("*")}
    have = {}
    for p in target.rglob("*"):  # rglob does not follow links into folders
        if p.is_symlink():
            return False
        have[p.relative_to(target)] = p
    if set(want) != set(have):
        return False
    return all(want[r].is_dir() == have[r].is_dir() and
               (want[r].is_dir() or _same_file(want[r], have[r])) for r in want)


def _same_file(a: Path, b: Path) -> bool:
    if not b.is_file() or b.is_symlink() or a.stat().st_size != b.stat().st_size:
        return False
    return _crc32(a) == _crc32(b)


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            crc = zlib.crc32(block, crc)
    return crc
