"""Hostile input to the data layer: every file a dataset reads lies inside its audio folder (links,
swaps after listing), malformed rows are rejects with their line, tiny, truncated and
out-of-range WAVs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from audio_clips import small_folder, wav_bytes, write_clip

from fsd.config import AudioConfig, from_dict
from fsd.data.audio import AudioError, load_audio
from fsd.data.sources import load_dataset


def folder_cfg(audio_dir, csv, **data):
    return from_dict({"data": {"source": "folder", "audio_dir": str(audio_dir), "csv": str(csv),
                               **data}})


def test_csv_rows_cannot_name_files_outside_the_audio_folder(tmp_path):
    audio = tmp_path / "audio"
    outside = tmp_path / "elsewhere"
    write_clip(audio / "ok.wav")
    write_clip(audio / "sub" / "inner.wav")
    secret = write_clip(outside / "secret.wav")  # real audio: used to become training data
    (outside / "sub").mkdir()
    write_clip(outside / "sub" / "deep.wav")
    os.symlink(secret, audio / "link.wav")  # a link in the folder leading out of it
    os.symlink(outside / "sub", audio / "linkdir")  # a folder link leading out
    os.symlink(audio / "ok.wav", audio / "alias.wav")  # a link that stays inside: fine
    rows = ["ok.wav", "sub/inner.wav", "alias.wav", "../elsewhere/secret.wav", str(secret),
            "/etc/hostname", "../../../../../../etc/passwd", "link.wav", "linkdir/deep.wav",
            "sub/../../elsewhere/secret.wav"]
    csv = tmp_path / "meta.csv"
    csv.write_text("fname,label\n" + "".join(f"{r},Hum\n" for r in rows))
    ds = load_dataset(folder_cfg(audio, csv))
    assert sorted(ds.train["fname"]) == ["alias.wav", "ok.wav", "sub/inner.wav"]
    real_audio = os.path.realpath(audio)
    for path in ds.train["path"]:
        assert os.path.realpath(path).startswith(real_audio + os.sep)
    reasons = {r.fname: r.reason for r in ds.rejects}
    for i, row in enumerate(rows[3:], start=5):  # data lines start at 2
        assert row in reasons, row
        assert f"meta.csv line {i}" in reasons[row], reasons[row]
        # the reason names the row, never where it resolves to
        assert str(outside) not in reasons[row] and "/etc/" not in reasons[row]
        assert "inside the audio folder" in reasons[row] or "leads outside" in reasons[row]


def test_fsdkaggle2018_test_folder_links_leading_out_are_not_read(tmp_path):
    from test_datasets import make_fsd

    root = make_fsd(tmp_path / "fsd")
    write_clip(root / "FSDKaggle2018.audio_test" / "t_ok.wav")
    secret = write_clip(tmp_path / "secret.wav")
    os.symlink(secret, root / "FSDKaggle2018.audio_test" / "t_link.wav")
    os.symlink(secret, root / "FSDKaggle2018.audio_train" / "a_link.wav")
    ds = load_dataset(from_dict({"data": {"source": "fsdkaggle2018", "root": str(root)}}))
    assert set(ds.test["fname"]) == {"t_ok.wav"}
    assert "a_link.wav" not in set(ds.train["fname"])


def test_a_one_sample_wav_is_too_short_by_default():
    with pytest.raises(AudioError, match="too short"):
        load_audio(wav_bytes(np.array([0.5])), AudioConfig())
    assert AudioConfig().min_seconds == pytest.approx(0.05)
    t = np.arange(4410) / 44100  # 0.1 s is kept
    assert load_audio(wav_bytes(0.3 * np.sin(2 * np.pi * 440 * t)), AudioConfig()).size > 0


def test_huge_float_samples_are_scaled_not_called_silent():
    t = np.arange(44100) / 44100
    tone = np.sin(2 * np.pi * 440 * t)
    y = load_audio(wav_bytes(tone * 1e30, subtype="FLOAT"), AudioConfig())
    ref = load_audio(wav_bytes(tone, subtype="FLOAT"), AudioConfig())
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0 + 1e-6
    np.testing.assert_allclose(y, ref, atol=1e-4)


def test_a_truncated_wav_is_kept_with_a_warning_in_the_rejects_report(tmp_path):
    from fsd.data.audio import truncation
    from fsd.features.featurize import featurize

    t = np.arange(44100) / 44100
    full = wav_bytes(0.3 * np.sin(2 * np.pi * 440 * t))
    assert truncation(full) is None and truncation(b"OggS....") is None
    cut = full[: len(full) // 2]
    assert "truncated" in truncation(cut)
    cfg = small_folder(tmp_path)
    (Path(cfg.data.audio_dir) / "empty.wav").unlink()
    csv = Path(cfg.data.csv)
    csv.write_text(csv.read_text().replace("empty.wav,low\n", "cut.wav,low\n"))
    (Path(cfg.data.audio_dir) / "cut.wav").write_bytes(cut)
    result = featurize(cfg, progress=False)
    assert "cut.wav" in set(result.store.index["fname"])  # kept
    report = pd.read_csv(result.rejects_path)
    row = report[report["fname"] == "cut.wav"].iloc[0]
    assert row["stage"] == "warning" and "truncated" in row["reason"]
    assert not result.rejects and result.stats["n_warnings"] == 1  # a warning is no reject


def test_a_malformed_csv_row_is_a_reject_with_its_line_not_an_abort(tmp_path):
    audio = tmp_path / "audio"
    for name in ("a.wav", "b.wav", "c.wav", "d.wav", "e.wav"):
        write_clip(audio / name)
    csv = tmp_path / "meta.csv"
    csv.write_bytes(b"fname,label\n"
                    b"a.wav,Hum\n"                     # line 2: fine
                    b"b.wav,Hum,extra\n"               # line 3: an extra field
                    b"c.wav,\"Hum\n"                   # line 4: an unclosed quote
                    b"d.wav,Hu\xffm\n"                 # line 5: not UTF-8
                    b"e.wav,Buzz\n")                   # line 6: fine
    ds = load_dataset(folder_cfg(audio, csv))
    assert ds.train["fname"].tolist() == ["a.wav", "e.wav"]
    reasons = {r.fname: r.reason for r in ds.rejects}
    assert "meta.csv line 3" in reasons["meta.csv:3"] and "3 fields" in reasons["meta.csv:3"]
    assert "unclosed quote" in reasons["meta.csv:4"]
    assert "not UTF-8" in reasons["meta.csv:5"]
    # the files of the malformed rows are not listed by any row either
    assert {"b.wav", "c.wav", "d.wav"} <= set(reasons)


def _listed(tmp_path):
    audio, outside = tmp_path / "audio", tmp_path / "outside"
    write_clip(audio / "ok.wav", freq=440)
    write_clip(audio / "sub" / "inner.wav", freq=440)
    write_clip(outside / "secret.wav", seconds=0.5, freq=1234)
    write_clip(outside / "inner.wav", seconds=0.5, freq=1234)
    csv = tmp_path / "meta.csv"
    csv.write_text("fname,label\nok.wav,Hum\nsub/inner.wav,Hum\n")
    cfg = folder_cfg(audio, csv)
    return cfg, load_dataset(cfg), audio, outside


def test_a_clip_swapped_for_a_link_after_listing_is_not_read(tmp_path):
    from fsd.features.featurize import extract_one

    cfg, ds, audio, outside = _listed(tmp_path)
    paths = dict(zip(ds.train["fname"], ds.train["path"]))
    # between listing and decoding, the checked file becomes a link to a file outside
    os.unlink(audio / "ok.wav")
    os.symlink(outside / "secret.wav", audio / "ok.wav")
    result = extract_one("ok.wav", paths["ok.wav"], cfg)
    assert not result.ok and "link" in result.reason, result.reason
    # ... and a folder above a checked clip becomes a link to a folder outside
    os.rename(audio / "sub", tmp_path / "sub-moved")
    os.symlink(outside, audio / "sub")
    result = extract_one("sub/inner.wav", paths["sub/inner.wav"], cfg)
    assert not result.ok and "link" in result.reason, result.reason


def test_listed_paths_are_resolved_once(tmp_path):
    audio = tmp_path / "audio"
    write_clip(audio / "real.wav")
    os.symlink(audio / "real.wav", audio / "alias.wav")  # a link inside: allowed, resolved
    csv = tmp_path / "meta.csv"
    csv.write_text("fname,label\nreal.wav,Hum\nalias.wav,Hum\n")
    ds = load_dataset(folder_cfg(audio, csv))
    assert set(ds.train["path"]) == {os.path.realpath(audio / "real.wav")}


def test_rejects_name_the_csv_line_and_the_real_reason(tmp_path):
    from test_datasets import make_fsd

    root = make_fsd(tmp_path / "fsd")
    test_dir = root / "FSDKaggle2018.audio_test"
    write_clip(test_dir / "t_ok.wav")
    secret = write_clip(tmp_path / "secret.wav")
    os.symlink(secret, test_dir / "t_out.wav")
    os.symlink("/dev/zero", test_dir / "t_zero.wav")
    os.symlink(tmp_path / "nothing.wav", test_dir / "t_gone.wav")
    train_dir = root / "FSDKaggle2018.audio_train"
    os.symlink("/dev/zero", train_dir / "a_zero.wav")
    os.symlink(tmp_path / "nothing.wav", train_dir / "a_gone.wav")
    (train_dir / "a_dir.wav").mkdir()
    meta = root / "FSDKaggle2018.meta"
    with open(meta / "train_post_competition.csv", "a") as f:
        f.write("a_zero.wav,Bark,1,1,x\na_gone.wav,Bark,1,1,x\na_dir.wav,Bark,1,1,x\n")
    n_train = len((meta / "train_post_competition.csv").read_text().splitlines())
    (meta / "test_post_competition_scoring_clips.csv").write_text(
        "fname,label,usage\nt_ok.wav,Bark,Public\nt_out.wav,Bark,Public\n/etc/hostname,Bark,"
        "Public\nt_zero.wav,Bark,Public\nt_gone.wav,Bark,Public\n")
    ds = load_dataset(from_dict({"data": {"source": "fsdkaggle2018", "root": str(root)}}))
    assert set(ds.test["fname"]) == {"t_ok.wav"}
    r = {x.fname: x.reason for x in ds.rejects}
    csv = "test_post_competition_scoring_clips.csv"
    assert f"{csv} line 3" in r["t_out.wav"] and "leads outside" in r["t_out.wav"]
    assert f"{csv} line 4" in r["/etc/hostname"] and "inside the audio folder" in r["/etc/hostname"]
    assert f"{csv} line 5" in r["t_zero.wav"] and "leads outside" in r["t_zero.wav"]
    assert f"{csv} line 6" in r["t_gone.wav"] and "link to nothing" in r["t_gone.wav"]
    csv = "train_post_competition.csv"
    assert f"{csv} line {n_train - 2}" in r["a_zero.wav"] and "leads outside" in r["a_zero.wav"]
    assert f"{csv} line {n_train - 1}" in r["a_gone.wav"] and "link to nothing" in r["a_gone.wav"]
    assert f"{csv} line {n_train}" in r["a_dir.wav"] and "not a regular file" in r["a_dir.wav"]
    for reason in r.values():
        assert "but no such file" not in reason and str(tmp_path) not in reason
