"""The embedded sample: deterministic, varied in length, silence around, edge cases that load."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from fsd.config import AudioConfig
from fsd.data.audio import load_audio
from fsd.data.synthetic import CLASSES, ensure_sample, generate_sample, sample_key


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> pd.DataFrame:
    """The default sample (8 clips a class), generated once for this module."""
    csv = generate_sample(tmp_path_factory.mktemp("sample"))
    table = pd.read_csv(csv, keep_default_na=False)
    table["path"] = [str(csv.parent / f) for f in table["fname"]]
    return table


def test_two_generations_are_byte_identical(tmp_path, sample):
    again = generate_sample(tmp_path / "again")
    first = Path(sample["path"][0]).parent
    names = sorted(os.listdir(first))
    assert names == sorted(os.listdir(again.parent))
    for name in names:
        assert (first / name).read_bytes() == (again.parent / name).read_bytes(), name


def test_another_seed_gives_other_audio(tmp_path, sample):
    other = generate_sample(tmp_path / "s1", clips_per_class=1, seed=1)
    a = Path(sample["path"][0]).read_bytes()
    b = (other.parent / "low_hum_000.wav").read_bytes()
    assert a != b


def test_classes_and_counts(sample):
    assert sorted(sample["label"].unique()) == sorted(CLASSES)
    regular = sample[sample["edge"] == ""]
    assert regular["label"].value_counts().to_dict() == {c: 8 for c in CLASSES}
    assert set(sample["edge"]) == {"", "short", "long", "low_rate", "stereo"}
    assert sample["fname"].is_unique
    # every fourth regular clip is marked unverified; edge cases are verified
    assert (regular["manually_verified"] == 0).sum() == len(regular) // 4
    assert (sample.loc[sample["edge"] != "", "manually_verified"] == 1).all()


def test_lengths_span_0_3_to_15_seconds(sample):
    seconds = np.array([sf.info(p).duration for p in sample["path"]])
    np.testing.assert_allclose(seconds, sample["seconds"], atol=1e-3)
    assert seconds.min() == pytest.approx(0.3, abs=1e-3)
    assert seconds.max() == pytest.approx(15.0, abs=1e-3)
    regular = seconds[(sample["edge"] == "").to_numpy()]
    assert regular.min() >= 0.4 and regular.max() <= 8.0
    # spread out, skewed short like real data, and modest in total
    assert np.percentile(regular, 25) < 1.0 < 2.0 < np.percentile(regular, 90)
    assert 80 < seconds.sum() < 150


def test_files_are_16_bit_pcm_at_the_load_rate(sample):
    for path, edge in zip(sample["path"], sample["edge"]):
        info = sf.info(path)
        assert info.format == "WAV" and info.subtype == "PCM_16"
        assert info.samplerate == (22050 if edge == "low_rate" else 44100)
        assert info.channels == (2 if edge == "stereo" else 1)


def test_silence_before_and_after_is_trimmed(sample):
    cfg = AudioConfig()
    for path in sample["path"]:
        raw, sr = sf.read(path, always_2d=True)
        mono = raw.mean(axis=1)
        edge = int(0.015 * sr)
        frames = np.lib.stride_tricks.sliding_window_view(mono, min(2048, len(mono)))[::512]
        peak_rms = np.sqrt((frames ** 2).mean(axis=1)).max()
        for part in (mono[:edge], mono[-edge:]):
            rms = np.sqrt(np.mean(part ** 2))
            assert rms == 0 or 20 * np.log10(rms / peak_rms) < -60, path
        y = load_audio(path, cfg)
        assert 0 < len(y) / cfg.sample_rate < len(mono) / sr - 0.02, path


def test_noise_floor_and_exact_zeros_both_occur(sample):
    leads = [sf.read(p, dtype="int16")[0][:200] for p in sample["path"][sample["edge"] == ""]]
    assert any(not lead.any() for lead in leads)
    assert any(lead.any() for lead in leads)


def test_edge_cases_load_as_44k1_mono(sample):
    cfg = AudioConfig()
    edges = sample[sample["edge"] != ""].set_index("edge")
    for edge, row in edges.iterrows():
        y = load_audio(row["path"], cfg)
        assert y.ndim == 1 and y.dtype == np.float32 and np.isfinite(y).all()
        assert len(y) / cfg.sample_rate <= row["seconds"]
    stereo, _ = sf.read(edges.loc["stereo", "path"])
    assert not np.allclose(stereo[:, 0], stereo[:, 1])
    low_rate = load_audio(edges.loc["low_rate", "path"], AudioConfig(trim=False))
    assert len(low_rate) == pytest.approx(2.0 * 44100, abs=2)


def test_classes_differ_in_spectrum(sample):
    """Power-weighted spectral centroids separate the classes in a fixed order."""

    def centroid(path: str) -> float:
        y, sr = sf.read(path, always_2d=True)
        power = np.abs(np.fft.rfft(y.mean(axis=1))) ** 2
        return float((np.fft.rfftfreq(len(y), 1 / sr) * power).sum() / power.sum())

    c = sample.assign(c=[centroid(p) for p in sample["path"]]).groupby("label")["c"]
    lo, hi = c.min(), c.max()
    assert hi["low_hum"] < lo["chord"] and hi["chord"] < lo["pulses"]
    assert hi["pulses"] < min(lo["chirp"], lo["hiss"])
    assert max(hi["chirp"], hi["hiss"]) < lo["clicks"]


def test_clicks_are_percussive_and_hum_is_steady(sample):
    def crest(path: str) -> float:
        y = load_audio(path, AudioConfig())
        return float(np.abs(y).max() / np.sqrt(np.mean(y ** 2)))

    clicks = [crest(p) for p in sample.loc[sample["label"] == "clicks", "path"]]
    hum = [crest(p) for p in sample.loc[sample["label"] == "low_hum", "path"]]
    assert min(clicks) > max(hum)


@pytest.mark.parametrize("kwargs", [{"clips_per_class": 0}, {"seed": -1}, {"sample_rate": 100}])
def test_bad_arguments_are_refused(tmp_path, kwargs):
    with pytest.raises(ValueError):
        generate_sample(tmp_path, **kwargs)


def test_ensure_sample_generates_once_then_reuses(tmp_path):
    csv = ensure_sample(tmp_path, clips_per_class=1, seed=3)
    assert csv.parent == tmp_path / f"synthetic-{sample_key(1, 3, 44100)}"
    stamp = {p.name: p.stat().st_mtime_ns for p in csv.parent.iterdir()}
    assert ensure_sample(tmp_path, clips_per_class=1, seed=3) == csv
    assert {p.name: p.stat().st_mtime_ns for p in csv.parent.iterdir()} == stamp
    # no temporary folders left behind
    assert [p.name for p in tmp_path.iterdir()] == [csv.parent.name]


def test_ensure_sample_replaces_an_incomplete_folder(tmp_path):
    final = tmp_path / f"synthetic-{sample_key(1, 0, 44100)}"
    final.mkdir()
    (final / "low_hum_000.wav").write_bytes(b"half-written")
    csv = ensure_sample(tmp_path, clips_per_class=1, seed=0)
    assert csv.is_file() and sf.info(str(final / "low_hum_000.wav")).frames > 0


def test_sample_key_depends_on_every_input():
    keys = {sample_key(8, 0, 44100), sample_key(9, 0, 44100), sample_key(8, 1, 44100),
            sample_key(8, 0, 22050)}
    assert len(keys) == 4
