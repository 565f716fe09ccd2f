"""Property-based fuzzing (hypothesis) of the dataset CSV reader and the download's file list: a
value or a refusal, never another exception, never a file outside the audio folder."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from fuzz_strategies import SETTINGS, json_values
from hypothesis import given
from hypothesis import strategies as st

names = st.one_of(
    st.sampled_from(["a.wav", "b.wav", "sub/c.wav", "../out/x.wav", "/etc/passwd", "..", ".",
                     "link.wav", "sub/../a.wav", "sub/../../out/x.wav", "~/x.wav", "a.wav\x00x",
                     "C:\\x.wav", "\\\\host\\share\\x.wav", "", "  a.wav  "]),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=30))


cells_csv = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r"),
                    max_size=12)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    import soundfile as sf

    root = tmp_path_factory.mktemp("fuzzcsv")
    audio, out = root / "audio", root / "out"
    (audio / "sub").mkdir(parents=True)
    out.mkdir()
    y = (0.3 * np.sin(np.arange(800) / 5)).astype(np.float32)
    for p in (audio / "a.wav", audio / "b.wav", audio / "sub" / "c.wav", out / "x.wav"):
        sf.write(p, y, 8000)
    os.symlink(out / "x.wav", audio / "link.wav")
    return root


@SETTINGS
@given(rows=st.lists(st.tuples(names, cells_csv, cells_csv), max_size=8),
       header=st.sampled_from(["fname,label,fold", "fname,label", "label,fname,fold",
                               "fname,fold"]))
def test_the_csv_reader_never_reaches_outside_the_audio_folder(folder, rows, header):
    import csv
    import io

    from fsd.data.dataset import DatasetError
    from fsd.data.folder_csv import load_folder

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header.split(","))
    for r in rows:
        w.writerow(r[:len(header.split(","))])
    csv_path = folder / "meta.csv"
    csv_path.write_text(buf.getvalue())
    try:
        ds = load_folder(folder / "audio", csv_path, fold_column="fold" if "fold" in header else "")
    except DatasetError as exc:
        assert str(folder / "out") not in str(exc)
        return
    base = os.path.realpath(folder / "audio")
    for path in ds.train["path"]:
        assert os.path.realpath(path).startswith(base + os.sep), path
    for r in ds.rejects:
        assert str(folder / "out") not in r.reason and "/etc/" not in r.reason
    assert "link.wav" not in set(ds.train["fname"])


entry_values = st.one_of(json_values, st.sampled_from([
    "file:///etc/passwd", "https://x/y.zip", "/relative", "ftp://h/x", 12, -1, "abc"]))


@SETTINGS
@given(st.one_of(json_values, st.dictionaries(
    st.sampled_from(["entries", "files", "hits"]),
    st.lists(st.one_of(entry_values, st.dictionaries(
        st.sampled_from(["key", "filename", "size", "checksum", "links"]),
        st.one_of(entry_values, st.dictionaries(st.sampled_from(["content", "self", "x"]),
                                                entry_values, max_size=2)), max_size=5)),
        max_size=4), max_size=2)))
def test_the_download_file_list_parses_or_refuses(listing):
    from unittest import mock

    from fsd.data import download

    class _Resp:
        def __init__(self, body):
            self.body = body

        def read(self, n=-1):
            return self.body

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    body = json.dumps(listing).encode()
    with mock.patch.object(download, "_open", lambda url, **kw: _Resp(body)):
        try:
            files = download.record_files("1", "https://example.org")
        except download.DownloadError as exc:
            assert len(str(exc)) < 600
            return
    for rf in files.values():
        assert rf.url.startswith("https://")
        assert rf.size is None or (isinstance(rf.size, int) and rf.size >= 0)


raw_lines = st.lists(st.one_of(
    st.binary(max_size=30),
    st.sampled_from([b"a.wav,A", b"b.wav,B,extra", b'a.wav,"A', b"b.wav,\xff\xfe", b"\x00,A",
                     b'"sub/c.wav",C', b"../out/x.wav,A", b"link.wav,A"])), max_size=8)


@SETTINGS
@given(raw_lines)
def test_malformed_csv_rows_become_rejects_not_errors(folder, lines):
    from fsd.data.dataset import DatasetError
    from fsd.data.folder_csv import load_folder

    csv_path = folder / "raw.csv"
    csv_path.write_bytes(b"fname,label\n" + b"\n".join(lines) + b"\n")
    try:
        ds = load_folder(folder / "audio", csv_path, verified_column="")
    except DatasetError as exc:
        assert "no usable train clip" in str(exc)  # every row bad: the only error left
        return
    base = os.path.realpath(folder / "audio")
    for path in ds.train["path"]:
        assert os.path.realpath(path).startswith(base + os.sep)
    assert "link.wav" not in set(ds.train["fname"])
