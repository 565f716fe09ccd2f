"""The embedded sample: a small, deterministic, labelled set of synthetic clips.

It lets every stage run end to end on any machine without downloading anything. Six classes
of clearly different spectral and temporal character, so that even a short training run
separates them:

============  =========================================================================
low_hum       a 55-140 Hz tone with two harmonics and slow vibrato (sustained, dark)
chirp         repeated exponential sweeps from 1.5-3 kHz up to 5-9 kHz with a 2nd partial
clicks        percussive broadband noise bursts with 3-30 ms decays, 4-10 per second
hiss          steady band-passed noise centred at 2.5-7 kHz with a slow level drift
pulses        a 0.5-1.5 kHz carrier gated into Hann-shaped pulses at 3-8 Hz
chord         two harmonic tones a major third, fourth or fifth apart, slow attack and decay
============  =========================================================================

Clips are 16-bit PCM WAV at the load rate (44.1 kHz by default), with leading and trailing
silence (exact zeros or a noise floor 75 dB below the loudest frame, so the recipe's trim at
60 dB removes it). Regular clips last 0.4-8 s, skewed short like the real data. Four edge
cases are extra clips, marked in the ``edge`` column of ``labels.csv``: ``short`` (0.3 s),
``long`` (15 s), ``low_rate`` (written at half the rate, 22.05 kHz by default) and
``stereo`` (two different channels). Every fourth regular clip is marked unverified (its
label is still right) so that the unverified-label path has something to act on.

Everything is drawn from numpy Generators seeded by (seed, class, clip): two generations
with the same arguments are byte-identical.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

log = logging.getLogger(__name__)

# Bump when the generator's output changes, so that cached samples are regenerated.
SAMPLE_VERSION = 1
CLASSES = ("low_hum", "chirp", "clicks", "hiss", "pulses", "chord")
REGULAR_SECONDS = (0.4, 8.0)
# q ** LENGTH_SKEW on a log scale: most clips short, a few long (median ~1.2 s at 8 a class).
LENGTH_SKEW = 1.5
# (edge name, class, seconds); the low_rate clip is written at half the sample rate.
EDGE_CASES = (("short", "clicks", 0.3), ("long", "low_hum", 15.0),
              ("low_rate", "chirp", 2.0), ("stereo", "pulses", 2.5))
FLOOR_DB = -75.0  # noise floor relative to the loudest 2048-sample frame
CSV_NAME = "labels.csv"
CSV_COLUMNS = ["fname", "label", "manually_verified", "edge", "seconds", "sample_rate",
               "channels"]

Synth = Callable[[np.random.Generator, int, int], np.ndarray]


def _t(n: int, sr: int) -> np.ndarray:
    return np.arange(n) / sr


def _low_hum(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = _t(n, sr)
    f0 = rng.uniform(55, 140)
    vib = 1 + rng.uniform(0.01, 0.04) * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t
                                                + rng.uniform(0, 2 * np.pi))
    phase = 2 * np.pi * np.cumsum(f0 * vib) / sr
    tremolo = 0.85 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t)
    return tremolo * (np.sin(phase) + 0.35 * np.sin(2 * phase) + 0.15 * np.sin(3 * phase))


def _chirp(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    y = np.zeros(n)
    cap = 0.45 * sr
    pos = 0
    while pos < n:
        d = min(int(rng.uniform(0.08, 0.3) * sr), n - pos)
        f_start = rng.uniform(1500, 3000)
        f_end = min(rng.uniform(5000, 9000), cap)
        freq = f_start * (f_end / f_start) ** (np.arange(d) / max(d, 1))
        phase = 2 * np.pi * np.cumsum(freq) / sr
        # The 2nd partial only where it stays below Nyquist (no aliasing at 22.05 kHz).
        partial2 = np.where(2 * freq < cap, 0.5 * np.sin(2 * phase), 0.0)
        y[pos:pos + d] += np.hanning(d) * (np.sin(phase) + partial2)
        pos += d + int(rng.uniform(0.05, 0.25) * sr)
    return y


def _clicks(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    y = np.zeros(n)
    rate = rng.uniform(4, 10)
    onsets = [0]
    while True:
        nxt = onsets[-1] + int(rng.exponential(1 / rate) * sr) + int(0.02 * sr)
        if nxt >= n:
            break
        onsets.append(nxt)
    for on in onsets:
        tau = rng.uniform(0.003, 0.03)
        m = min(int(6 * tau * sr), n - on)
        burst = rng.standard_normal(m) * np.exp(-np.arange(m) / (tau * sr))
        y[on:on + m] += rng.uniform(0.5, 1.0) * burst
    return y


def _hiss(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    noise = rng.standard_normal(n)
    freqs = np.fft.rfftfreq(n, 1 / sr)
    fc = min(rng.uniform(2500, 7000), 0.4 * sr)
    bw = rng.uniform(500, 2000)
    y = np.fft.irfft(np.fft.rfft(noise) * np.exp(-0.5 * ((freqs - fc) / bw) ** 2), n)
    return y * (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * _t(n, sr)
                                 + rng.uniform(0, 2 * np.pi)))


def _pulses(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = _t(n, sr)
    carrier = np.sin(2 * np.pi * rng.uniform(500, 1500) * t)
    duty = rng.uniform(0.25, 0.5)
    frac = (t * rng.uniform(3, 8)) % 1.0
    gate = np.where(frac < duty, 0.5 - 0.5 * np.cos(2 * np.pi * frac / duty), 0.0)
    return carrier * gate


def _chord(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = _t(n, sr)
    base = rng.uniform(196, 392)
    ratio = rng.choice([5 / 4, 4 / 3, 3 / 2])
    y = np.zeros(n)
    for f in (base, base * ratio):
        for k, a in ((1, 1.0), (2, 0.5), (3, 0.25)):
            y += a * np.sin(2 * np.pi * k * f * t + rng.uniform(0, 2 * np.pi))
    attack = np.clip(t / rng.uniform(0.05, 0.2), 0, 1)
    return y * attack * np.exp(-t / rng.uniform(2, 8))


SYNTHS: dict[str, Synth] = {"low_hum": _low_hum, "chirp": _chirp, "clicks": _clicks,
                            "hiss": _hiss, "pulses": _pulses, "chord": _chord}


def _frame_rms_max(y: np.ndarray, frame: int = 2048, hop: int = 512) -> float:
    if y.size <= frame:
        return float(np.sqrt(np.mean(y ** 2)))
    frames = np.lib.stride_tricks.sliding_window_view(y, frame)[::hop]
    return float(np.sqrt((frames ** 2).mean(axis=1)).max())


def render_clip(label: str, rng: np.random.Generator, seconds: float, sr: int,
                zero_silence: bool, pitch: float = 1.0) -> np.ndarray:
    """One clip as float64 in [-1, 1]: silence, a faded signal of ``label``, silence.

    ``pitch`` scales every frequency and rate of the sound (it is synthesised at
    ``sr / pitch`` and written at ``sr``); 1.0 leaves the clip as the sample has it.
    """
    n = max(int(round(seconds * sr)), 1)
    lead = int(np.clip(rng.uniform(0.08, 0.2) * seconds, 0.02, 0.6) * sr)
    trail = int(np.clip(rng.uniform(0.08, 0.2) * seconds, 0.02, 0.6) * sr)
    n_sig = max(n - lead - trail, 1)
    sig = SYNTHS[label](rng, n_sig, sr if pitch == 1.0 else int(round(sr / pitch)))
    fade = min(int(0.005 * sr), n_sig // 2)
    if fade:
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
        sig[:fade] *= ramp
        sig[n_sig - fade:] *= ramp[::-1]
    peak = np.abs(sig).max()
    level = 10 ** (rng.uniform(-12, -3) / 20)
    sig = sig * (level / peak) if peak > 0 else sig
    y = np.zeros(n)
    y[lead:lead + n_sig] = sig
    if not zero_silence:
        floor = _frame_rms_max(sig) * 10 ** (FLOOR_DB / 20)
        y += floor * rng.standard_normal(n)
    return y


def _to_pcm16(y: np.ndarray) -> np.ndarray:
    # Quantised here, not by libsndfile, so the bytes depend on numpy's rounding alone.
    return np.clip(np.round(y * 32767), -32768, 32767).astype(np.int16)


def _clip_lengths(seed: int, class_index: int, n: int) -> np.ndarray:
    """Stratified over the class, so each class spans short to long clips."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(class_index, 10_000)))
    q = (rng.permutation(n) + rng.uniform(size=n)) / n
    lo, hi = REGULAR_SECONDS
    return np.round(lo * (hi / lo) ** (q ** LENGTH_SKEW), 3)


def generate_sample(out_dir: str | Path, clips_per_class: int = 8, seed: int = 0,
                    sample_rate: int = 44100) -> Path:
    """Write the sample's WAVs and ``labels.csv`` into ``out_dir``; return the CSV's path.

    ``labels.csv`` is written last, so its presence means the folder is complete.
    """
    if clips_per_class < 1:
        raise ValueError(f"clips_per_class must be >= 1, got {clips_per_class}")
    if seed < 0:
        raise ValueError(f"synthetic seed must be >= 0, got {seed}")
    if sample_rate < 8000:
        raise ValueError(f"sample_rate must be >= 8000 Hz, got {sample_rate}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[list] = []
    for ci, label in enumerate(CLASSES):
        for i, seconds in enumerate(_clip_lengths(seed, ci, clips_per_class)):
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(ci, i)))
            y = render_clip(label, rng, float(seconds), sample_rate, zero_silence=i % 2 == 0)
            fname = f"{label}_{i:03d}.wav"
            sf.write(out / fname, _to_pcm16(y), sample_rate, subtype="PCM_16", format="WAV")
            rows.append([fname, label, int(i % 4 != 3), "", f"{len(y) / sample_rate:.4f}",
                         sample_rate, 1])
    for ei, (edge, label, seconds) in enumerate(EDGE_CASES):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1000, ei)))
        sr = sample_rate // 2 if edge == "low_rate" else sample_rate
        y = render_clip(label, rng, seconds, sr, zero_silence=ei % 2 == 1)
        channels = 1
        if edge == "stereo":
            # A delayed, quieter right channel: the mono mix-down must not cancel out.
            y = np.stack([y, 0.6 * np.roll(y, int(0.003 * sr))], axis=1)
            channels = 2
        fname = f"{label}_{edge}.wav"
        sf.write(out / fname, _to_pcm16(y), sr, subtype="PCM_16", format="WAV")
        rows.append([fname, label, 1, edge, f"{len(y) / sr:.4f}", sr, channels])
    csv_path = out / CSV_NAME
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)
    return csv_path


def sample_key(clips_per_class: int, seed: int, sample_rate: int) -> str:
    payload = json.dumps({"clips_per_class": clips_per_class, "seed": seed,
                          "sample_rate": sample_rate, "version": SAMPLE_VERSION},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def ensure_sample(cache_dir: str | Path, clips_per_class: int = 8, seed: int = 0,
                  sample_rate: int = 44100) -> Path:
    """The sample under ``<cache_dir>/synthetic-<key>/``, generated once; its CSV's path.

    Generation goes to a temporary sibling folder that is renamed into place, so a killed
    run or a concurrent one never leaves a half-written sample where readers look.
    """
    cache = Path(cache_dir)
    final = cache / f"synthetic-{sample_key(clips_per_class, seed, sample_rate)}"
    if (final / CSV_NAME).is_file():
        return final / CSV_NAME
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=cache))
    try:
        generate_sample(tmp, clips_per_class, seed, sample_rate)
        if final.exists() and not (final / CSV_NAME).is_file():
            shutil.rmtree(final, ignore_errors=True)  # not ours to keep: no CSV, incomplete
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / CSV_NAME).is_file():  # not another writer's finished sample
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("generated the synthetic sample in %s", final)
    return final / CSV_NAME
