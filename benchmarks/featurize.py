"""Featurize throughput: the project's feature path against a faithful seed-style pipeline.

Both run side by side in one process, clip by clip, each on one core (BLAS limited to one
thread), so machine load affects both alike and the ratio is what matters:

- **project**: ``fsd.features.extract.extract_clip`` (what ``featurize`` runs in every worker),
  twice: with ``summary.tonnetz=harmonic_cqt`` (the recipe's harmonic-part tonnetz, what the
  difference table compares) and with the default ``stft_chroma`` (tonnetz of set 1's chroma).
- **seed-style**: the 2018 recipe written as its notebooks did it with today's librosa:
  ``librosa.load`` at 44.1 kHz (``res_type="kaiser_best"``, resampy), trim, resample to
  22.05 kHz with kaiser_best for the log-mel, each spectral feature computing its own
  reflect-padded STFT from the waveform, tonnetz as
  ``librosa.feature.tonnetz(y=librosa.effects.harmonic(x))``, statistics with scipy, sets
  2-4 with pandas/sklearn as in the original kernels.

It prints audio seconds per second per core for both, their ratio, and the max/mean
absolute difference of every feature group between the two (also in units of the group's
spread across clips, which is what the StandardScaler before the PCA sees). With
``--featurize`` it also times the whole ``featurize()`` stage (process pool, shards, store).

    .venv/bin/python benchmarks/featurize.py --limit 60
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_ROOT = REPO.parent / "shared" / "data" / "fsdkaggle2018-instruments"
SR = 44100
TONNETZ_MODES = ("harmonic_cqt", "stft_chroma")


# --- the seed-style reference ---------------------------------------------------------


def _stats(F: np.ndarray) -> np.ndarray:
    from scipy.stats import skew

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = skew(F, axis=1)
    return np.hstack((np.mean(F, axis=1), np.std(F, axis=1), sk, np.max(F, axis=1),
                      np.min(F, axis=1)))


def _spec(x: np.ndarray) -> np.ndarray:
    import librosa

    return np.abs(librosa.stft(x, pad_mode="reflect"))  # 2018's librosa padded by reflection


def seed_set1(x: np.ndarray) -> np.ndarray:
    import librosa

    f = librosa.feature
    series = [
        f.melspectrogram(sr=SR, S=_spec(x)),
        f.mfcc(sr=SR, S=_spec(x), n_mfcc=40),  # of the linear magnitude: the recipe's quirk
        f.chroma_stft(S=_spec(x), sr=SR),
        f.spectral_contrast(S=_spec(x), sr=SR),
        f.spectral_rolloff(S=_spec(x), sr=SR),
        f.spectral_centroid(S=_spec(x), sr=SR),
        f.spectral_bandwidth(S=_spec(x), sr=SR),
        f.tonnetz(y=librosa.effects.harmonic(x, pad_mode="reflect"), sr=SR),
        f.zero_crossing_rate(x),
    ]
    return np.hstack([_stats(s) for s in series])


def _widths(w: np.ndarray) -> list[float]:
    # lengths of the runs of ones, by the positions of the zeros around them
    if np.sum(w) == 0:
        return [0.0, 0.0, 0.0, 0.0]  # the original returned 3 values here (never reached)
    zeros = np.where(np.concatenate(([0], w, [0])) == 0)[0]
    runs = np.diff(zeros) - 1
    runs = runs[runs > 0]
    return [np.log(1 + np.mean(runs)), np.log(1 + np.std(runs)), np.log(1 + np.max(runs)),
            len(runs)]


def seed_set2(x: np.ndarray) -> np.ndarray:
    sq = x * x
    c = np.cumsum(np.insert(sq, 0, 0))
    env = (c[2000:] - c[:-2000]) / 2000.0
    top = np.max(env)
    out = _widths(1 * (env > 0.05 * top)) + _widths(1 * (env > 0.25 * top))
    attack = np.min(np.where(env > 0.99 * top))
    low = np.where(env < 0.2 * top)[0]
    low = low[low > attack]
    release = len(env) if low.size == 0 else np.min(low)
    n = len(x)
    zc = np.sum(x[: n - 1] * x[1:n] <= 0)
    return np.array(out + [np.log(1 + attack), np.log(1 + release), np.log(1 + zc), zc / n])


def _quad(y: np.ndarray, start: int) -> list[float]:
    from sklearn.linear_model import LinearRegression
    from sklearn.preprocessing import PolynomialFeatures

    t = PolynomialFeatures(degree=2, include_bias=False).fit_transform(
        np.arange(start, start + len(y)).reshape(-1, 1))
    model = LinearRegression().fit(t, y)
    return list(model.coef_) + [model.intercept_]


def seed_set3(x: np.ndarray) -> np.ndarray:
    starts = np.arange(100, len(x), 2000)
    x64 = x.astype(np.float64)  # numpy < 2 (2018) always transformed in double precision
    spectra = pd.DataFrame([np.abs(np.fft.fft(x64[a:b])) for a, b in zip(starts[:-1], starts[1:])])
    m = spectra.apply(lambda col: np.log(1 + np.mean(col)), axis=0).to_numpy()[:1000]
    top = np.max(m)
    lead = int(np.min(np.where(m == top)))
    counts = [np.sum(m > c * top) for c in (0.1, 0.2, 0.5, 0.9, 0.99)]
    widths = sum((_widths(1 * (m > c * top)) for c in (0.1, 0.2, 0.5, 0.9, 0.99)), [])
    centre = np.sum(np.arange(len(m)) * (m * m) / np.sum(m * m))
    low = np.where(m < 0.1 * top)[0]
    quad_w = [0.0, 0.0, 0.0]
    if low.size:
        left = np.max(low[low < lead]) if low[low < lead].size else 0
        right = np.min(low[low > lead]) if low[low > lead].size else 0
        if right - left > 2:
            quad_w = _quad(m[left:right], left)
    integrals = [np.sum(m), np.sum(m) / len(m), np.sqrt(np.sum(m * m)),
                 np.sqrt(np.sum(m * m)) / len(m)]
    hf = [np.sum(m[:50] >= 0.5 * top), np.sum(m[:50] >= 0.9 * top)]
    peaks = [centre] + counts + [lead] + hf + widths + _quad(m, 0) + integrals + quad_w
    smooth = np.convolve(m, np.ones(20) / 20)[19:]
    return np.concatenate((np.array(peaks, dtype=float), smooth[np.arange(0, len(smooth), 40)]))


def seed_set4(x: np.ndarray) -> np.ndarray:
    out: list[float] = []
    for n in (1, 2, 3):
        for data in (x, np.abs(x), np.diff(x)):
            step = len(data) // n
            for j, i in enumerate(range(0, len(data), step)):
                if j == n - 1:
                    i = len(data) - 1  # the original's last part: one sample
                if j < n:
                    seg = data[i : i + step]
                    out += [np.mean(seg), np.std(seg), np.min(seg), np.max(seg)]
    return np.array(out)


def seed_clip(path: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(logmel (frames, 64), summary (1133,), seconds) the 2018 way."""
    import librosa

    x, _ = librosa.load(path, sr=SR, res_type="kaiser_best")
    x, _ = librosa.effects.trim(x)
    y22 = librosa.resample(x, orig_sr=SR, target_sr=22050, res_type="kaiser_best")
    mel = librosa.feature.melspectrogram(y=y22, sr=22050, n_fft=1764, hop_length=220, n_mels=64,
                                         pad_mode="reflect")
    logmel = ((librosa.power_to_db(mel) + 90.5) / (39.21 + 90.5)).T
    summary = np.concatenate((seed_set1(x), seed_set2(x), seed_set3(x), seed_set4(x)))
    return logmel.astype(np.float32), summary, len(x) / SR


# --- the run ---------------------------------------------------------------------------


def _clips(root: Path, limit: int) -> list[Path]:
    meta = pd.read_csv(root / "FSDKaggle2018.meta" / "train_post_competition.csv")
    paths = [root / "FSDKaggle2018.audio_train" / f for f in meta["fname"]]
    paths = [p for p in paths if p.exists()]
    return paths[:limit] if limit else paths


def compare(paths: list[Path]) -> dict:
    from fsd.config import Config
    from fsd.features.extract import extract_clip
    from fsd.features.summary import summary_layout

    cfgs = {}
    for mode in TONNETZ_MODES:
        cfgs[mode] = Config()
        cfgs[mode].summary.tonnetz = mode
        extract_clip(paths[0], cfgs[mode])  # JIT and caches warm, as in a long-running worker
    cfg = cfgs["harmonic_cqt"]
    seed_clip(str(paths[0]))
    t_ours = dict.fromkeys(TONNETZ_MODES, 0.0)
    t_seed = secs = 0.0
    ours_s, seed_s, mel_max, mel_sum, mel_n = [], [], 0.0, 0.0, 0
    chroma_tonnetz = []
    for i, p in enumerate(paths):
        t0 = time.perf_counter()
        feats = extract_clip(p, cfg)
        t1 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lm, summ, seconds = seed_clip(str(p))
        t2 = time.perf_counter()
        fast = extract_clip(p, cfgs["stft_chroma"])
        t3 = time.perf_counter()
        t_ours["harmonic_cqt"] += t1 - t0
        t_ours["stft_chroma"] += t3 - t2
        t_seed += t2 - t1
        secs += feats.seconds
        ours_s.append(feats.summary)
        chroma_tonnetz.append(fast.summary)
        seed_s.append(np.nan_to_num(summ))
        n = min(len(lm), len(feats.logmel))
        d = np.abs(lm[:n] - feats.logmel[:n])
        mel_max = max(mel_max, float(d.max()))
        mel_sum += float(d.sum())
        mel_n += d.size
        print(f"\r{i + 1}/{len(paths)} clips", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    A, B = np.stack(ours_s), np.stack(seed_s)
    spread = B.std(axis=0)
    groups = []
    for name, sl in summary_layout(cfg.summary).items():
        d = np.abs(A[:, sl] - B[:, sl])
        sd = spread[sl]
        z = np.where(sd > 0, d / np.where(sd > 0, sd, 1), 0.0)
        groups.append((name, float(d.max()), float(d.mean()), float(z.max()), float(z.mean())))
        if name == "tonnetz":  # the default's tonnetz is a different feature: how far it is
            d = np.abs(np.stack(chroma_tonnetz)[:, sl] - B[:, sl])
            z = np.where(sd > 0, d / np.where(sd > 0, sd, 1), 0.0)
            groups.append(("tonnetz*", float(d.max()), float(d.mean()), float(z.max()),
                           float(z.mean())))
    return {"seconds": secs, "t_ours": t_ours, "t_seed": t_seed, "groups": groups,
            "logmel": (mel_max, mel_sum / max(mel_n, 1))}


def run_featurize(root: Path, limit: int, workers: int) -> dict:
    from fsd.config import load_config
    from fsd.features.featurize import featurize

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, ["data.source=fsdkaggle2018", f"data.root={root}",
                                 f"data.max_clips={limit}", f"store.cache_dir={tmp}",
                                 f"store.workers={workers}", "folds.n_folds=5"])
        result = featurize(cfg, progress=False)
        return dict(result.stats)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT,
                   help="an FSDKaggle2018-layout folder (default: %(default)s)")
    p.add_argument("--limit", type=int, default=0, help="use only the first N clips (0: all)")
    p.add_argument("--featurize", action="store_true",
                   help="also time the whole featurize() stage (process pool over all cores)")
    p.add_argument("--workers", type=int, default=0,
                   help="featurize workers (0: all cores; only with --featurize)")
    args = p.parse_args(argv)
    if not (args.root / "FSDKaggle2018.meta").is_dir():
        p.error(f"{args.root} is not an FSDKaggle2018 layout (no FSDKaggle2018.meta/)")

    from threadpoolctl import threadpool_limits

    paths = _clips(args.root, args.limit)
    with threadpool_limits(1):
        r = compare(paths)
    seed = r["seconds"] / r["t_seed"]
    print(f"clips: {len(paths)} from {args.root} ({r['seconds']:.0f} s of trimmed audio), one core")
    print(f"seed-style : {seed:8.1f} audio-s/s per core ({r['t_seed']:.1f} s)")
    for mode in TONNETZ_MODES:
        ours = r["seconds"] / r["t_ours"][mode]
        print(f"project    : {ours:8.1f} audio-s/s per core ({r['t_ours'][mode]:.1f} s), "
              f"{ours / seed:5.1f}x the seed-style, summary.tonnetz={mode}")
    mx, mean = r["logmel"]
    print(f"\nlog-mel (scaled) |diff|: max {mx:.4f}  mean {mean:.2e}")
    print("summary group     max|diff|    mean|diff|   max|diff|/sd  mean|diff|/sd"
          "   (harmonic_cqt; tonnetz*: stft_chroma)")
    for name, dmax, dmean, zmax, zmean in r["groups"]:
        print(f"  {name:12s} {dmax:12.4g} {dmean:12.3g} {zmax:13.3g} {zmean:13.3g}")
    if args.featurize:
        stats = run_featurize(args.root, args.limit, args.workers)
        print(f"\nfeaturize(): {stats['n_clips']} clips, {stats['audio_seconds']:.0f} audio-s in "
              f"{stats['elapsed_s']:.1f} s with {stats['workers']} worker(s): "
              f"{stats['audio_seconds_per_s']:.1f} audio-s/s "
              f"({stats['audio_seconds_per_s'] / stats['workers']:.1f} per worker)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
