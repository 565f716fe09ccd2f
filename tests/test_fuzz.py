"""Property-based fuzzing (hypothesis) of what hostile input reaches first: the request parser
(params, the table of clips, the serving front's body checks) and the dataset CSV reader.

Bounded (few examples, no deadline) so the suite stays fast; each property says what may come
out: a value, or the module's own refusal with a short message; never another exception, and
never a file outside the audio folder."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fsd.serving.requests import (  # noqa: E402
    KNOWN_PARAMS,
    InferenceParams,
    RequestError,
    clips_from_frame,
    parse_params,
)

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=20)


@SETTINGS
@given(st.dictionaries(st.one_of(st.sampled_from(KNOWN_PARAMS), st.text(max_size=20)),
                       json_values, max_size=6))
def test_params_parse_or_refuse_briefly(params):
    try:
        p = parse_params(params, default_lengths=[100, 200], default_crops=2, default_top_k=3,
                         default_seed=0, n_classes=5)
    except RequestError as exc:
        assert 0 < len(str(exc)) < 400
        return
    assert isinstance(p, InferenceParams)
    assert 1 <= len(p.tta_lengths) <= 16 and all(1 <= v <= 4000 for v in p.tta_lengths)
    assert 1 <= p.tta_crops <= 32 and 1 <= p.top_k <= 5


cells = st.one_of(st.none(), st.text(max_size=60), st.binary(max_size=60),
                  st.integers(), st.floats(allow_nan=True),
                  st.lists(st.text(max_size=10), max_size=3))


@SETTINGS
@given(st.dictionaries(st.one_of(st.just("audio"), st.text(max_size=8)),
                       st.lists(cells, min_size=0, max_size=6), min_size=0, max_size=3))
def test_clip_tables_parse_or_refuse_briefly(columns):
    n = min((len(v) for v in columns.values()), default=0)
    frame = pd.DataFrame({k: v[:n] for k, v in columns.items()}) if columns else pd.DataFrame()
    try:
        blobs = clips_from_frame(frame, max_clips=4, max_clip_bytes=1000)
    except RequestError as exc:
        assert 0 < len(str(exc)) < 500
        return
    assert 1 <= len(blobs) <= 4 and all(isinstance(b, bytes) and 0 < len(b) <= 1000 for b in blobs)


@SETTINGS
@given(st.integers(2, 4), st.lists(cells, min_size=1, max_size=3))
def test_a_repeated_audio_column_is_refused(times, values):
    frame = pd.DataFrame([[v] * times for v in values], columns=["audio"] * times)
    with pytest.raises(RequestError, match="appears"):
        clips_from_frame(frame, max_clips=4, max_clip_bytes=1000)


def _check(body: bytes, content_type: str):
    from fsd.serving.front import Front, Refused

    front = Front(app=None, max_body_bytes=10_000)
    try:
        front._check(front._mime(content_type), body)
    except Refused as exc:
        assert 400 <= exc.status < 500 and len(exc.message) < 400
        return False
    return True


@SETTINGS
@given(st.binary(max_size=300), st.sampled_from(["application/json", "text/csv",
                                                 "application/vnd.apache.parquet"]))
def test_front_refuses_junk_bodies_with_4xx(body, content_type):
    _check(body, content_type)


@SETTINGS
@given(st.dictionaries(st.sampled_from(["dataframe_split", "dataframe_records", "inputs",
                                        "instances", "params", "data", "columns"]),
                       json_values, max_size=3))
def test_front_accepts_only_the_audio_column_and_known_params(doc):
    if _check(json.dumps(doc).encode(), "application/json"):
        keys = [k for k in doc if k != "params"]
        assert len(keys) == 1 and keys[0] in ("dataframe_split", "dataframe_records", "inputs",
                                              "instances")
        assert set(doc.get("params") or {}) <= set(KNOWN_PARAMS)
        data = doc[keys[0]]
        if keys[0] == "dataframe_split" and "columns" in data:
            assert data["columns"] == ["audio"]


# --- the dataset CSV reader ------------------------------------------------------------------

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


# --- issue 19: the config loader, the download's file list, malformed CSV rows --------------

yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30))
config_keys = st.sampled_from(["name", "output_dir", "data", "audio", "folds", "model", "train",
                               "ensemble", "store", "logmel", "pca", "bogus"])
field_keys = st.sampled_from(["n_folds", "sample_rate", "hop_length", "n_mels", "width",
                              "cnn_channels", "audio_dir", "tta_lengths", "fold", "shard_size",
                              "n_components", "cache_dir", "source", "x"])


@SETTINGS
@given(st.dictionaries(config_keys, st.one_of(
    yaml_scalars, st.lists(yaml_scalars, max_size=4),
    st.dictionaries(field_keys, st.one_of(yaml_scalars, st.lists(yaml_scalars, max_size=4)),
                    max_size=4)), max_size=5))
def test_the_config_loader_loads_or_refuses_briefly(data):
    from fsd.config import ConfigError, from_dict

    try:
        cfg = from_dict(data)
    except ConfigError as exc:
        assert len(str(exc)) < 600
        return
    assert "/" not in cfg.name and ".." not in cfg.name


@SETTINGS
@given(st.text(max_size=300), st.integers(1, 6), st.integers(1, 6))
def test_random_yaml_and_alias_bombs_are_refused_briefly(text, depth, width):
    import yaml

    from fsd.config import ConfigError, safe_yaml

    bomb = "\n".join([f"a0: &a0 [{', '.join(['x'] * width)}]"] + [
        f"a{d}: &a{d} [{', '.join([f'*a{d - 1}'] * width)}]" for d in range(1, depth)])
    for doc in (text, bomb):
        try:
            safe_yaml(doc, "fuzz", limit=2000)
        except ConfigError as exc:
            assert len(str(exc)) < 300
        except yaml.YAMLError:  # pragma: no cover - must not escape
            raise AssertionError("a YAMLError escaped")
    if width ** depth > 4000:
        with pytest.raises(ConfigError):
            safe_yaml(bomb, "fuzz", limit=2000)


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
