"""The 1,133 summary statistics: length, layout against a slow reference, robustness; the PCA."""

from __future__ import annotations

import warnings

import librosa
import numpy as np
import pytest
import scipy.ndimage
import scipy.stats

from fsd.config import SummaryConfig
from fsd.features import summary as sm
from fsd.features.projection import SummaryProjector

CFG = SummaryConfig()
SR = 44100


def _clip(seconds: float, seed: int = 0) -> np.ndarray:
    """A chord with vibrato, a few clicks and noise: every feature group has something to see."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    y = 0.3 * np.sin(2 * np.pi * 220 * t + 0.5 * np.sin(2 * np.pi * 5 * t))
    y += 0.2 * np.sin(2 * np.pi * 277.2 * t) * np.exp(-t)
    y += 0.02 * rng.standard_normal(len(t))
    if len(t) > 400:
        for k in rng.integers(0, len(t) - 200, size=3):
            y[k : k + 200] += rng.standard_normal(200) * np.exp(-np.arange(200) / 30)
    return y.astype(np.float32)


def test_length_and_layout_arithmetic():
    assert sm.summary_dim(CFG) == 1133 == 5 * 197 + 12 + 64 + 72
    layout = sm.summary_layout(CFG)
    assert layout["mel"] == slice(0, 640) and layout["tonnetz"] == slice(950, 980)
    assert layout["set2"] == slice(985, 997) and layout["set4"] == slice(1061, 1133)
    starts = [s.start for s in layout.values()]
    stops = [s.stop for s in layout.values()]
    assert starts[0] == 0 and starts[1:] == stops[:-1] and stops[-1] == 1133
    names = sm.summary_names(CFG)
    assert len(names) == 1133 == len(set(names))
    assert names[128] == "mel.std.0" and names[1061] == "set4.n1.raw.mean.0"


def _slow_set1(x: np.ndarray) -> dict[str, np.ndarray]:
    S = np.abs(librosa.stft(x, pad_mode="reflect"))
    f = librosa.feature
    return {
        "mel": f.melspectrogram(S=S, sr=SR),
        "mfcc": f.mfcc(S=S, sr=SR, n_mfcc=40),
        "chroma": f.chroma_stft(S=S, sr=SR),
        "contrast": f.spectral_contrast(S=S, sr=SR),
        "rolloff": f.spectral_rolloff(S=S, sr=SR),
        "centroid": f.spectral_centroid(S=S, sr=SR),
        "bandwidth": f.spectral_bandwidth(S=S, sr=SR),
        "zcr": f.zero_crossing_rate(x),
    }


def _slow_part_stats(data: np.ndarray, n: int) -> list[float]:
    step = len(data) // n
    out = []
    for j in range(n):
        start = len(data) - 1 if j == n - 1 else j * step
        seg = data[start : start + step]
        out += [seg.mean(), seg.std(), seg.min(), seg.max()]
    return out


def test_layout_matches_a_slow_reference():
    x = _clip(2.5)
    out = sm.summary_features(x, SR, CFG)
    layout = sm.summary_layout(CFG)
    for name, series in _slow_set1(x).items():
        block = out[layout[name]].astype(np.float64)
        rows = series.shape[0]
        mean, std, skew, mx, mn = (block[i * rows : (i + 1) * rows] for i in range(5))
        scale = np.abs(series).max() + 1e-12
        np.testing.assert_allclose(mean, series.mean(axis=1), atol=1e-5 * scale, err_msg=name)
        np.testing.assert_allclose(std, series.std(axis=1), atol=1e-5 * scale, err_msg=name)
        np.testing.assert_allclose(mx, series.max(axis=1), atol=1e-5 * scale, err_msg=name)
        np.testing.assert_allclose(mn, series.min(axis=1), atol=1e-5 * scale, err_msg=name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref_skew = np.nan_to_num(scipy.stats.skew(series.astype(np.float64), axis=1))
        np.testing.assert_allclose(skew, ref_skew, atol=2e-3, rtol=1e-3, err_msg=name)
    # set 4 (mean/std/min/max of raw, |raw|, diff in 1, 2, 3 parts; the last part one sample)
    x64 = x.astype(np.float64)
    ref4 = []
    for n in (1, 2, 3):
        for data in (x64, np.abs(x64), np.diff(x64)):
            ref4 += _slow_part_stats(data, n)
    np.testing.assert_allclose(out[layout["set4"]], ref4, rtol=1e-5, atol=1e-7)
    assert out[layout["set4"]][0] == pytest.approx(x[-1])  # n=1 "mean" is the last sample
    # set 2's zero-crossing count and proportion
    crossings = np.sum(x[:-1] * x[1:] <= 0)
    assert out[layout["set2"]][10] == pytest.approx(np.log1p(crossings), rel=1e-6)
    assert out[layout["set2"]][11] == pytest.approx(crossings / len(x), rel=1e-5)


def test_tonnetz_stays_close_to_the_faithful_harmonic_computation():
    x = _clip(3.0, seed=1)
    cfg = SummaryConfig(tonnetz="harmonic_cqt")
    block = sm.summary_features(x, SR, cfg)[sm.summary_layout(cfg)["tonnetz"]]
    ref = librosa.feature.tonnetz(y=librosa.effects.harmonic(x, pad_mode="reflect"), sr=SR)
    mean, std = block[:6], block[6:12]
    # the approximation's documented tolerance: means/stds within a few hundredths
    np.testing.assert_allclose(mean, ref.mean(axis=1), atol=0.03)
    np.testing.assert_allclose(std, ref.std(axis=1), atol=0.03)


def test_stft_chroma_tonnetz_is_the_tonnetz_of_the_set1_chroma():
    x = _clip(2.0, seed=4)
    layout = sm.summary_layout(CFG)
    assert CFG.tonnetz == "stft_chroma"  # the default
    fast = sm.summary_features(x, SR, CFG)
    S = np.abs(librosa.stft(x, pad_mode="reflect"))
    tuning = librosa.estimate_tuning(S=S, sr=SR, bins_per_octave=12)
    chroma = librosa.feature.chroma_stft(S=S, sr=SR, tuning=tuning)
    ref = librosa.feature.tonnetz(chroma=chroma)
    block = fast[layout["tonnetz"]].astype(np.float64)
    np.testing.assert_allclose(block[:6], ref.mean(axis=1), atol=1e-5)
    np.testing.assert_allclose(block[6:12], ref.std(axis=1), atol=1e-5)
    np.testing.assert_allclose(block[18:24], ref.max(axis=1), atol=1e-5)
    np.testing.assert_allclose(block[24:30], ref.min(axis=1), atol=1e-5)
    # the harmonic computation changes the tonnetz columns and nothing else
    slow = sm.summary_features(x, SR, SummaryConfig(tonnetz="harmonic_cqt"))
    others = np.ones(len(fast), bool)
    others[layout["tonnetz"]] = False
    np.testing.assert_array_equal(fast[others], slow[others])
    assert not np.allclose(fast[layout["tonnetz"]], slow[layout["tonnetz"]])
    with pytest.raises(ValueError, match="stft_chroma or harmonic_cqt"):
        sm.summary_features(x, SR, SummaryConfig(tonnetz="cqt"))


@pytest.mark.parametrize("seconds", [1 / SR, 0.005, 0.05, 0.1, 0.3])
def test_short_clips_give_finite_features(seconds):
    out = sm.summary_features(_clip(max(seconds, 0.0005))[: max(1, int(seconds * SR))], SR, CFG)
    assert out.shape == (1133,) and out.dtype == np.float32
    assert np.isfinite(out).all()


def test_constant_and_long_clips_give_finite_features():
    const = sm.summary_features(np.full(SR, 0.25, np.float32), SR, CFG)
    assert np.isfinite(const).all()
    # skew of a constant row is undefined: deliberately 0, not NaN
    layout = sm.summary_layout(CFG)
    assert np.all(const[layout["zcr"]][2] == 0.0)
    rng = np.random.default_rng(0)
    long = (0.1 * rng.standard_normal(30 * SR)).astype(np.float32)
    assert np.isfinite(sm.summary_features(long, SR, CFG)).all()


def test_rejects_empty_or_multichannel():
    with pytest.raises(ValueError):
        sm.summary_features(np.zeros(0, np.float32), SR, CFG)
    with pytest.raises(ValueError):
        sm.summary_features(np.zeros((10, 2), np.float32), SR, CFG)


# --- the fast pieces equal librosa's -----------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 1), (2, 7), (4, 40), (40, 3), (17, 300)])
def test_median_filter_equals_scipy(shape):
    a = np.random.default_rng(1).random(shape, dtype=np.float32) ** 2
    a[0, : min(3, shape[1])] = 0.5  # ties
    ref = scipy.ndimage.median_filter(a, size=(1, 31), mode="reflect")
    np.testing.assert_array_equal(sm.median_filter_rows(a, 31), ref)


def test_tuning_chroma_and_shape_features_equal_librosa():
    x = _clip(2.0, seed=3)
    S = np.abs(librosa.stft(x, pad_mode="reflect"))
    t12, t36 = sm._tunings(S, SR, 2048, (12, 36))
    assert t12 == librosa.estimate_tuning(S=S, sr=SR, bins_per_octave=12)
    assert t36 == librosa.estimate_tuning(S=S, sr=SR, bins_per_octave=36)
    np.testing.assert_allclose(sm._chroma(S, SR, 2048, t12), librosa.feature.chroma_stft(S=S, sr=SR),
                               atol=1e-6)
    roll, cen, bw = sm._shape_features(S, SR, 2048)
    np.testing.assert_array_equal(roll, librosa.feature.spectral_rolloff(S=S, sr=SR))
    np.testing.assert_allclose(cen, librosa.feature.spectral_centroid(S=S, sr=SR), rtol=1e-6)
    np.testing.assert_allclose(bw, librosa.feature.spectral_bandwidth(S=S, sr=SR), rtol=1e-5)
    np.testing.assert_array_equal(sm._zcr(x, 2048, 512), librosa.feature.zero_crossing_rate(x))


@pytest.mark.filterwarnings("ignore:n_fft=.*too large")  # the lowest octaves of a 1-s signal
@pytest.mark.parametrize("tuning", [0.0, -0.21, 0.37])
def test_cqt_with_cached_bases_equals_librosa(tuning):
    h = np.random.default_rng(2).standard_normal(11025).astype(np.float32)
    ours = sm.cqt_magnitude(h, 11025, 128, tuning)
    ref = np.abs(librosa.cqt(h, sr=11025, hop_length=128, n_bins=252, bins_per_octave=36,
                             tuning=tuning))
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-6 * ref.max())


# --- the projector -------------------------------------------------------------------------------


def _summaries(n: int = 40, d: int = 30) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.standard_normal((n, 5)) @ rng.standard_normal((5, d))  # rank 5 + noise
    X = base + 0.01 * rng.standard_normal((n, d))
    X[:, 3] = 7.0  # a constant column (like the one-sample std columns of set 4)
    return X.astype(np.float32)


def test_projector_fit_transform_save_load(tmp_path):
    X = _summaries()
    proj = SummaryProjector(n_components=8).fit(X)
    Z = proj.transform(X)
    assert Z.shape == (40, 8) and Z.dtype == np.float32 and np.isfinite(Z).all()
    evr = proj.explained_variance_ratio_
    assert evr.shape == (8,) and np.all(np.diff(evr) <= 1e-12) and evr[:5].sum() > 0.99
    path = proj.save(tmp_path / "sub" / "projector.joblib")
    again = SummaryProjector.load(path)
    np.testing.assert_allclose(again.transform(X), Z)
    assert not list(path.parent.glob(".*tmp*"))


def test_projector_variance_fraction_and_cap(caplog):
    X = _summaries()
    frac = SummaryProjector(n_components=0.95).fit(X)
    assert frac.n_components_ <= 6 and frac.explained_variance_ratio_.sum() >= 0.95
    with caplog.at_level("WARNING"):
        capped = SummaryProjector(n_components=350).fit(X[:12])
    assert capped.n_components_ == 12
    assert "exceeds min(n_samples=12" in caplog.text


def test_projector_refuses_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        SummaryProjector(3).fit(np.zeros((1, 4)))
    X = _summaries()
    X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        SummaryProjector(3).fit(X)
    with pytest.raises(RuntimeError, match="not fitted"):
        SummaryProjector(3).transform(_summaries())
    with pytest.raises(ValueError, match="expected 30"):
        SummaryProjector(3).fit(_summaries()).transform(np.zeros((2, 5)))
