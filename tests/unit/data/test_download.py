"""`fsd download fsdkaggle2018 DEST` against a local Zenodo stand-in (threaded, with Range)."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fsd.data.download import DownloadError, download_zenodo, unpack

REPO = Path(__file__).resolve().parents[3]
RECORD = "2552860"


@pytest.fixture(autouse=True)
def no_retry_wait(monkeypatch):
    """Retries here follow a test server's cut or corrupt transfer at once (a real one waits
    RETRY_WAIT_S x the attempt)."""
    monkeypatch.setattr("fsd.data.download.RETRY_WAIT_S", 0.0)


def _wav(seconds: float, freq: float) -> bytes:
    t = np.arange(int(44100 * seconds)) / 44100
    buf = io.BytesIO()
    sf.write(buf, (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 44100,
             format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def dataset_zips() -> dict[str, bytes]:
    """Small zips in the record's own layout (same names, same folders)."""
    train = {f"FSDKaggle2018.audio_train/{i:08x}.wav": _wav(0.5 + 0.1 * i, 300 + 150 * i)
             for i in range(6)}
    test = {f"FSDKaggle2018.audio_test/{i:08x}.wav": _wav(0.6, 500 + 100 * i) for i in range(2)}
    labels = ["Cello", "Bark", "Cello", "Bark", "Cello", "Bark"]
    train_csv = "fname,label,manually_verified,freesound_id,license\n" + "".join(
        f"{i:08x}.wav,{lab},1,{100 + i},CC0\n" for i, lab in enumerate(labels))
    test_csv = "fname,label,usage,freesound_id,license\n" + "".join(
        f"{i:08x}.wav,{lab},Public,{200 + i},CC0\n" for i, lab in enumerate(["Cello", "Bark"]))
    meta = {"FSDKaggle2018.meta/train_post_competition.csv": train_csv.encode(),
            "FSDKaggle2018.meta/test_post_competition_scoring_clips.csv": test_csv.encode()}
    return {"FSDKaggle2018.audio_train.zip": _zip(train),
            "FSDKaggle2018.audio_test.zip": _zip(test),
            "FSDKaggle2018.meta.zip": _zip(meta)}


class Zenodo:
    """A threaded HTTP server with the files API and Range support; faults on request."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.requests: list[tuple[str, str]] = []  # (path, Range header)
        self.cut_after: dict[str, int] = {}  # name -> bytes sent before dropping, once
        self.corrupt_once: set[str] = set()
        self.listing = None  # a files-API answer to send instead of the real one
        self.endless: set[str] = set()  # names streamed without end (no Content-Length)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                owner.requests.append((self.path, self.headers.get("Range", "")))
                if self.path == f"/api/records/{RECORD}/files":
                    entries = [{"key": n, "size": len(d),
                                "checksum": "md5:" + hashlib.md5(d).hexdigest(),
                                "links": {"content": f"/api/records/{RECORD}/files/{n}/content"}}
                               for n, d in owner.files.items()]
                    listing = owner.listing if owner.listing is not None else {"entries": entries}
                    body = listing if isinstance(listing, bytes) else json.dumps(listing).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                name = self.path.split("/files/", 1)[-1].split("/content")[0]
                if name not in owner.files:
                    self.send_error(404)
                    return
                data = owner.files[name]
                if name in owner.endless:
                    self.send_response(200)
                    self.end_headers()
                    try:
                        for _ in range(200_000):  # ~13 GB at most, never reached by a client
                            self.wfile.write(bytes(65536))
                    except OSError:
                        pass
                    return
                if name in owner.corrupt_once:
                    owner.corrupt_once.discard(name)
                    data = bytes(data[:100]) + bytes([data[100] ^ 0xFF]) + bytes(data[101:])
                start = 0
                rng = self.headers.get("Range", "")
                if rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                cut = owner.cut_after.pop(name, None)
                if cut is not None:
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return  # the client sees a short body
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # shutdown() waits for the loop's next poll: 0.5 s by default, in every test
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,),
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_download_verifies_resumes_unpacks_and_is_idempotent(tmp_path):
    from fsd.data.fsdkaggle2018 import load_fsdkaggle2018

    zips = dataset_zips()
    with Zenodo(zips) as server:
        cut = len(zips["FSDKaggle2018.audio_train.zip"]) // 3
        server.cut_after["FSDKaggle2018.audio_train.zip"] = cut  # interrupted transfer
        server.corrupt_once.add("FSDKaggle2018.meta.zip")  # corrupted transfer
        done = download_zenodo(tmp_path / "data", RECORD, base_url=server.url, allow_http=True,
                               progress=False)
        assert sorted(done) == sorted(zips)
        train_gets = [r for p, r in server.requests if "audio_train" in p]
        assert train_gets == ["", f"bytes={cut}-"]  # resumed where it broke, not restarted
        meta_gets = [r for p, r in server.requests if "meta.zip" in p]
        assert meta_gets == ["", ""]  # the corrupt copy failed its MD5 and was fetched again
        ds = load_fsdkaggle2018(tmp_path / "data")
        assert len(ds.train) == 6 and len(ds.test) == 2
        assert sorted(ds.labels) == ["Bark", "Cello"]
        left = [p.name for p in (tmp_path / "data" / ".fsd-download").iterdir()]
        assert sorted(left) == sorted(f"{n}.done" for n in zips)  # archives and parts gone

        n = len(server.requests)
        assert download_zenodo(tmp_path / "data", RECORD, base_url=server.url, allow_http=True) == []
        assert len(server.requests) == n  # the second run touched nothing


def test_a_partial_file_from_a_killed_run_is_resumed(tmp_path):
    zips = dataset_zips()
    name = "FSDKaggle2018.audio_test.zip"
    state = tmp_path / "data" / ".fsd-download"
    state.mkdir(parents=True)
    (state / f"{name}.part").write_bytes(zips[name][:1234])
    with Zenodo(zips) as server:
        download_zenodo(tmp_path / "data", RECORD, files=(name,), base_url=server.url, allow_http=True,
                        progress=False)
        assert [r for p, r in server.requests if name in p] == ["bytes=1234-"]
    assert len(list((tmp_path / "data" / "FSDKaggle2018.audio_test").glob("*.wav"))) == 2


def test_a_file_that_stays_corrupt_fails_and_leaves_no_data(tmp_path):
    zips = dataset_zips()
    name = "FSDKaggle2018.meta.zip"
    with Zenodo(zips) as server:
        server.corrupt_once.add(name)
        with pytest.raises(DownloadError, match="MD5"):
            download_zenodo(tmp_path / "data", RECORD, files=(name,), base_url=server.url, allow_http=True,
                            retries=0, progress=False)
    assert not (tmp_path / "data" / "FSDKaggle2018.meta").exists()
    assert not list((tmp_path / "data" / ".fsd-download").iterdir())  # no part, no marker


@pytest.mark.parametrize("member", ["../evil.txt", "/tmp/evil.txt", "a/../../evil.txt"])
def test_archives_that_climb_out_are_refused(tmp_path, member):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/fine.txt", "fine")
        info = zipfile.ZipInfo("placeholder")
        info.filename = member  # ZipInfo would normalise the name; a hostile archive does not
        zf.writestr(info, "evil")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(DownloadError, match="outside"):
        unpack(archive, dest)
    assert not (tmp_path / "evil.txt").exists() and not (dest / "ok").exists()


def test_a_symlink_member_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("FSDKaggle2018.meta/link")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DownloadError, match="symbolic link"):
        unpack(archive, tmp_path)


def test_cli_download_then_featurize_reads_it(tmp_path):
    zips = dataset_zips()
    with Zenodo(zips) as server:
        out = subprocess.run([sys.executable, "-m", "fsd", "download", "fsdkaggle2018",
                              str(tmp_path / "d"), "--base-url", server.url, "--no-test",
                              "--allow-http"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "data.root=" in out.stdout
    assert (tmp_path / "d" / "FSDKaggle2018.audio_train").is_dir()
    assert not (tmp_path / "d" / "FSDKaggle2018.audio_test").exists()


# --- issue 19, item 5: the file list is not trusted beyond its MD5 ---------------------------


def _entry(name: str, data: bytes, **extra) -> dict:
    e = {"key": name, "size": len(data), "checksum": "md5:" + hashlib.md5(data).hexdigest(),
         "links": {"content": f"/api/records/{RECORD}/files/{name}/content"}}
    e.update(extra)
    return {k: v for k, v in e.items() if v is not None}


def test_a_transfer_stops_at_the_declared_size(tmp_path):
    import time

    zips = dataset_zips()
    name = "FSDKaggle2018.meta.zip"
    with Zenodo(zips) as server:
        server.endless.add(name)
        t0 = time.monotonic()
        with pytest.raises(DownloadError, match="MD5"):
            download_zenodo(tmp_path / "d", RECORD, files=(name,), base_url=server.url,
                            allow_http=True, retries=0, progress=False, timeout=10)
        assert time.monotonic() - t0 < 30
    part = tmp_path / "d" / ".fsd-download" / f"{name}.part"
    assert not part.exists() or part.stat().st_size <= len(zips[name])


def test_a_file_without_a_size_stops_at_the_cap(tmp_path):
    zips = dataset_zips()
    name = "FSDKaggle2018.meta.zip"
    with Zenodo(zips) as server:
        server.endless.add(name)
        server.listing = {"entries": [_entry(name, zips[name], size=None)]}
        with pytest.raises(DownloadError, match="no size"):
            download_zenodo(tmp_path / "d", RECORD, files=(name,), base_url=server.url,
                            allow_http=True, retries=0, progress=False, max_unsized=300_000)
    part = tmp_path / "d" / ".fsd-download" / f"{name}.part"
    assert not part.exists() or part.stat().st_size <= 300_000


@pytest.mark.parametrize("link", ["file:///etc/hostname", "file:///dev/zero",
                                  "ftp://127.0.0.1/x.zip", "gopher://x/y"])
def test_only_http_links_are_followed(tmp_path, link):
    secret = Path("/etc/hostname").read_bytes() if Path("/etc/hostname").exists() else b"x"
    name = "FSDKaggle2018.meta.zip"
    with Zenodo(dataset_zips()) as server:
        server.listing = {"entries": [_entry(name, secret, links={"content": link})]}
        with pytest.raises(DownloadError, match="only https or http"):
            download_zenodo(tmp_path / "d", RECORD, files=(name,), base_url=server.url,
                            allow_http=True, retries=0, progress=False, timeout=10)
    assert not list((tmp_path / "d").glob("**/*.zip*"))


def test_plain_http_needs_the_explicit_flag(tmp_path):
    with Zenodo(dataset_zips()) as server:
        with pytest.raises(DownloadError, match="only https"):
            download_zenodo(tmp_path / "d", RECORD, base_url=server.url, progress=False)
        assert server.requests == []  # refused before any request


@pytest.mark.parametrize("listing", [
    {"entries": [{"key": "FSDKaggle2018.meta.zip", "size": "abc", "checksum": "md5:00"}]},
    {"entries": ["FSDKaggle2018.meta.zip"]},
    {"entries": {"FSDKaggle2018.meta.zip": {}}},
    {"entries": [{"key": "FSDKaggle2018.meta.zip", "checksum": "md5:00", "links": "x"}]},
    {"entries": [{"key": "FSDKaggle2018.meta.zip", "checksum": "md5:00",
                  "links": {"content": 12}}]},
    {"entries": [{"key": ["FSDKaggle2018.meta.zip"]}]},
    {"entries": [{"key": "FSDKaggle2018.meta.zip", "checksum": 5}]},
    {"entries": [{"key": "FSDKaggle2018.meta.zip", "size": -1, "checksum": "md5:00"}]},
    {"entries": 7},
    [1, 2, 3],
])
def test_a_malformed_file_list_is_a_download_error(tmp_path, listing):
    with Zenodo(dataset_zips()) as server:
        server.listing = listing
        with pytest.raises(DownloadError):
            download_zenodo(tmp_path / "d", RECORD, files=("FSDKaggle2018.meta.zip",),
                            base_url=server.url, allow_http=True, retries=0, progress=False)


def test_a_malformed_file_list_is_a_clean_cli_error(tmp_path):
    with Zenodo(dataset_zips()) as server:
        server.listing = {"entries": [{"key": "FSDKaggle2018.meta.zip", "size": "abc"}]}
        out = subprocess.run([sys.executable, "-m", "fsd", "download", "fsdkaggle2018",
                              str(tmp_path / "d"), "--base-url", server.url, "--allow-http"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]


def test_a_file_list_nested_200000_deep_is_one_line(tmp_path):
    """Round 3: a download list nested 200,000 deep was a RecursionError traceback."""
    with Zenodo(dataset_zips()) as server:
        server.listing = b'{"entries": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
        out = subprocess.run([sys.executable, "-m", "fsd", "download", "fsdkaggle2018",
                              str(tmp_path / "d"), "--base-url", server.url, "--allow-http"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert len(out.stderr.strip().splitlines()) == 1 and "nests deeper" in out.stderr


def test_unpacking_touches_only_the_datasets_own_folders(tmp_path):
    dest = tmp_path / "d"
    (dest / "precious").mkdir(parents=True)
    (dest / "precious" / "important.txt").write_text("keep me")
    state = dest / ".fsd-download"
    state.mkdir()
    (state / "other.done").write_text("x")
    archive = tmp_path / "FSDKaggle2018.meta.zip"
    archive.write_bytes(_zip({"precious/evil.txt": b"evil", ".fsd-download/x": b"x",
                              "FSDKaggle2018.meta/a.csv": b"fname,label\n"}))
    unpack(archive, dest)
    assert (dest / "precious" / "important.txt").read_text() == "keep me"
    assert not (dest / "precious" / "evil.txt").exists()
    assert (state / "other.done").exists() and not (state / "x").exists()
    assert (dest / "FSDKaggle2018.meta" / "a.csv").exists()


def test_unpacking_never_replaces_a_folder_that_is_not_the_downloads(tmp_path):
    dest = tmp_path / "d"
    (dest / "FSDKaggle2018.meta").mkdir(parents=True)
    (dest / "FSDKaggle2018.meta" / "mine.txt").write_text("the user's")
    archive = tmp_path / "FSDKaggle2018.meta.zip"
    archive.write_bytes(_zip({"FSDKaggle2018.meta/a.csv": b"fname,label\n"}))
    with pytest.raises(DownloadError, match="already exists"):
        unpack(archive, dest)
    assert (dest / "FSDKaggle2018.meta" / "mine.txt").read_text() == "the user's"
    # an interrupted unpack that already moved the folder: kept as it is, the unpack completes
    (dest / "FSDKaggle2018.meta" / "mine.txt").unlink()
    (dest / "FSDKaggle2018.meta" / "a.csv").write_bytes(b"fname,label\n")
    unpack(archive, dest)
    assert (dest / "FSDKaggle2018.meta" / "a.csv").read_bytes() == b"fname,label\n"


@pytest.mark.parametrize("marker", ["FSDKaggle2018.meta", "FSDKaggle2018.meta\nother"])
def test_a_stale_unpacking_marker_does_not_vouch_for_a_users_folder(tmp_path, marker):
    """Round 3: a stale `.unpacking` marker made the download replace the user's own
    FSDKaggle2018.meta/, files included."""
    dest = tmp_path / "d"
    mine = dest / "FSDKaggle2018.meta"
    mine.mkdir(parents=True)
    (mine / "a.csv").write_text("my own edited labels\n")  # same name, other content
    (mine / "notes.txt").write_text("the user's")
    state = dest / ".fsd-download"
    state.mkdir()
    (state / "FSDKaggle2018.meta.zip.unpacking").write_text(marker)
    archive = tmp_path / "FSDKaggle2018.meta.zip"
    archive.write_bytes(_zip({"FSDKaggle2018.meta/a.csv": b"fname,label\n"}))
    with pytest.raises(DownloadError, match="move it away"):
        unpack(archive, dest)
    assert (mine / "a.csv").read_text() == "my own edited labels\n"
    assert (mine / "notes.txt").read_text() == "the user's"
    # a file of the archive's name is not replaced either
    (mine / "notes.txt").unlink()
    (mine / "a.csv").unlink()
    mine.rmdir()
    mine.write_text("a file")
    with pytest.raises(DownloadError, match="move it away"):
        unpack(archive, dest)
    assert mine.read_text() == "a file"
    assert [p.name for p in state.iterdir()] == ["FSDKaggle2018.meta.zip.unpacking"]
