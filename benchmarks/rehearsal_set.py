"""A synthetic FSDKaggle2018 with the real dataset's shape, for full-size rehearsals.

One generator for every benchmark that needs the dataset's size (``full_size.py``,
``featurize_full.py``). What it copies from the real dataset:

- the layout (``FSDKaggle2018.audio_train/``, ``FSDKaggle2018.audio_test/``,
  ``FSDKaggle2018.meta/``), so ``data.source: fsdkaggle2018`` reads it as it reads the download;
- the 41 official labels with their official train counts (94-300 a class, 9,473 in all) and
  per-class ``manually_verified`` counts (3,710, 39%);
- 9,400 test clips: the 1,600 scored ones with the official per-class counts and usage split
  (301 Public, 1,299 Private), the other 7,800 ``Ignored`` with label ``None``;
- 16-bit 44.1 kHz mono WAV, 0.3-30 s: train lengths log-normal with the recipe's quartiles
  (2.63 s / 7.63 s), test clips shorter (median 1.2 s: the real test zip is about a third of
  the train zip).

What makes the 41 classes a task (tellable apart, not trivially): each label is one of the six
sound types of ``fsd.data.synthetic`` at one of seven pitch levels (every frequency and rate
scaled by 0.6-1.7x, 1.19x apart). Each type's own random spread (a hum's fundamental spans
2.5x, a pulse train's rate 2.7x) is wider than a level step, so neighbouring levels overlap;
every clip also carries background noise at 6-30 dB SNR and, half the time, a quieter sound of
another type. Like the real set, 30% of the unverified train labels are wrong (the real
unverified labels are 65-70% right); test labels are always right.

Deterministic: a clip's bytes depend only on (seed, split, index), whatever ``scale`` or the
number of workers. ``scale`` keeps a stratified share of each class (at least one clip) and of
each test usage.

    .venv/bin/python benchmarks/full_size.py --scale 0.03 --out /tmp/fsd-rehearsal --generate-only
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

SR = 44100
VERSION = 2  # bump when the clips change, so a kept set is generated again
# The 41 labels, with their train counts, verified counts and scored test counts, as in
# FSDKaggle2018.meta (train_post_competition.csv, test_post_competition.csv).
LABELS = (
    "Acoustic_guitar", "Applause", "Bark", "Bass_drum", "Burping_or_eructation", "Bus", "Cello",
    "Chime", "Clarinet", "Computer_keyboard", "Cough", "Cowbell", "Double_bass",
    "Drawer_open_or_close", "Electric_piano", "Fart", "Finger_snapping", "Fireworks", "Flute",
    "Glockenspiel", "Gong", "Gunshot_or_gunfire", "Harmonica", "Hi-hat", "Keys_jangling",
    "Knock", "Laughter", "Meow", "Microwave_oven", "Oboe", "Saxophone", "Scissors", "Shatter",
    "Snare_drum", "Squeak", "Tambourine", "Tearing", "Telephone", "Trumpet", "Violin_or_fiddle",
    "Writing")
TRAIN_COUNTS = (300, 300, 239, 300, 210, 109, 300, 115, 300, 119, 243, 191, 300, 158, 150, 300,
                117, 300, 300, 94, 292, 147, 165, 300, 139, 279, 300, 155, 146, 299, 300, 95, 300,
                300, 300, 221, 300, 120, 300, 300, 270)
VERIFIED_COUNTS = (105, 61, 67, 67, 75, 59, 125, 66, 130, 60, 69, 96, 92, 67, 74, 71, 77, 75, 128,
                   70, 85, 145, 88, 89, 66, 90, 88, 69, 67, 99, 256, 59, 67, 70, 69, 92, 62, 112,
                   86, 250, 67)
TEST_COUNTS = (45, 32, 28, 28, 32, 25, 54, 29, 56, 26, 30, 42, 40, 29, 32, 30, 33, 32, 55, 29, 37,
               63, 33, 39, 28, 39, 38, 29, 29, 42, 110, 25, 29, 34, 29, 40, 27, 48, 37, 108, 29)
N_PUBLIC, N_PRIVATE, N_IGNORED = 301, 1299, 7800
N_TRAIN, N_TEST = sum(TRAIN_COUNTS), N_PUBLIC + N_PRIVATE + N_IGNORED
TRAIN_MEDIAN_S, TEST_MEDIAN_S, SIGMA = 4.48, 1.2, 0.79  # log-normal; quartiles 2.63 / 7.63 s
PITCHES = tuple(float(0.6 * (1.7 / 0.6) ** (k / 6)) for k in range(7))
WRONG_UNVERIFIED = 0.3
TRAIN_DIR, TEST_DIR, META = ("FSDKaggle2018.audio_train", "FSDKaggle2018.audio_test",
                             "FSDKaggle2018.meta")
DONE = "DONE.json"


def sound_of(label_index: int) -> tuple[str, float]:
    """The synthetic sound type and pitch level that stand for label ``label_index``."""
    from fsd.data.synthetic import CLASSES

    return CLASSES[label_index % len(CLASSES)], PITCHES[label_index // len(CLASSES)]


def _share(counts: tuple[int, ...] | list[int], scale: float, minimum: int) -> list[int]:
    return [max(minimum, int(round(c * scale))) for c in counts]


def _lengths(n: int, median: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(rng.lognormal(np.log(median), SIGMA, n), 0.3, 30.0).round(3)


def plan(scale: float, seed: int) -> dict[str, list[dict]]:
    """Every clip of the set at ``scale``: name, written label, true label, seconds, flags."""
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    rng = np.random.default_rng([seed, 1])
    train: list[dict] = []
    for li, (n, n_ver) in enumerate(zip(_share(TRAIN_COUNTS, scale, 1),
                                        _share(VERIFIED_COUNTS, scale, 1))):
        # (seed, label, i): a clip is the same clip at every scale that keeps it
        for i in range(n):
            r = np.random.default_rng([seed, 2, li, i])
            seconds = float(_lengths(1, TRAIN_MEDIAN_S, r)[0])
            wrong, other = r.uniform() < WRONG_UNVERIFIED, int(r.integers(1, len(LABELS)))
            verified = i < min(n_ver, n)
            written = li if verified or not wrong else (li + other) % len(LABELS)
            train.append({"label": li, "written": written, "verified": verified,
                          "seconds": seconds, "key": (2, li, i)})
    order = rng.permutation(len(train))  # names in no label order, as the real hashes are
    for k, j in enumerate(order):
        train[j]["fname"] = f"{(k * 2654435761 + seed) % 2**31:08x}.wav"  # train < 2**31 <= test
    scored = _share(TEST_COUNTS, scale, 1)
    n_public = max(1, int(round(N_PUBLIC * scale)))  # and the rest Private: both are scored
    test: list[dict] = []
    for li, n in enumerate(scored):
        for i in range(n):
            r = np.random.default_rng([seed, 3, li, i])
            test.append({"label": li, "usage": "Private",
                         "seconds": float(_lengths(1, TEST_MEDIAN_S, r)[0]), "key": (3, li, i)})
    for j in np.random.default_rng([seed, 4]).permutation(len(test))[:n_public]:
        test[j]["usage"] = "Public"
    for i in range(int(round(N_IGNORED * scale))):
        r = np.random.default_rng([seed, 5, i])
        test.append({"label": int(r.integers(len(LABELS))), "usage": "Ignored",
                     "seconds": float(_lengths(1, TEST_MEDIAN_S, r)[0]), "key": (5, 0, i)})
    order = rng.permutation(len(test))
    for k, j in enumerate(order):
        test[j]["fname"] = f"{2**31 + (k * 2246822519 + seed) % 2**31:08x}.wav"
    return {"train": train, "test": test}


def render(label_index: int, seconds: float, seed: int, key: tuple[int, ...]) -> np.ndarray:
    """One clip as int16 PCM: the label's sound, background noise, maybe a second sound."""
    from fsd.data.synthetic import CLASSES, SYNTHS, _to_pcm16, render_clip

    rng = np.random.default_rng([seed, *key, 9])
    kind, pitch = sound_of(label_index)
    pitch *= float(np.exp(rng.normal(0, 0.04)))
    y = render_clip(kind, rng, seconds, SR, zero_silence=bool(rng.uniform() < 0.3), pitch=pitch)
    rms = float(np.sqrt(np.mean(y ** 2))) or 1e-4
    if rng.uniform() < 0.5:  # a quieter event of another type somewhere in the clip
        other = CLASSES[(CLASSES.index(kind) + rng.integers(1, len(CLASSES))) % len(CLASSES)]
        n = max(int(len(y) * rng.uniform(0.2, 0.6)), 16)
        ev = SYNTHS[other](rng, n, int(SR / rng.uniform(0.6, 1.7))) * np.hanning(n)
        ev *= rms * 10 ** (rng.uniform(-18, -8) / 20) / (np.sqrt(np.mean(ev ** 2)) or 1.0)
        at = int(rng.integers(0, len(y) - n + 1))
        y[at:at + n] += ev
    noise = np.cumsum(rng.standard_normal(len(y))) * 0.02 + rng.standard_normal(len(y))
    noise -= noise.mean()
    noise *= rms * 10 ** (-rng.uniform(6, 30) / 20) / (np.sqrt(np.mean(noise ** 2)) or 1.0)
    y = y + noise
    peak = np.abs(y).max()
    if peak > 0.99:
        y *= 0.99 / peak
    return _to_pcm16(y)


def _write(job: tuple[str, int, float, int, tuple[int, ...]]) -> float:
    import soundfile as sf

    path, label, seconds, seed, key = job
    if os.path.exists(path):
        return 0.0
    pcm = render(label, seconds, seed, key)
    tmp = path + ".tmp.wav"
    sf.write(tmp, pcm, SR, subtype="PCM_16")
    os.replace(tmp, path)
    return len(pcm) / SR


def generate(root: str | Path, scale: float, seed: int = 0, workers: int = 0,
             progress: bool = True) -> dict:
    """The set at ``scale`` under ``root``, generated once (a kept, finished set is reused).

    Clips go in first, the CSVs and ``DONE.json`` last, so a killed generation resumes.
    """
    from concurrent.futures import ProcessPoolExecutor

    root = Path(root)
    want = {"version": VERSION, "scale": scale, "seed": seed}
    done = root / DONE
    if done.is_file():
        info = json.loads(done.read_text())
        if all(info.get(k) == v for k, v in want.items()):
            return info
        for d in (TRAIN_DIR, TEST_DIR, META):
            shutil.rmtree(root / d, ignore_errors=True)
        done.unlink()
    clips = plan(scale, seed)
    for d in (TRAIN_DIR, TEST_DIR, META):
        (root / d).mkdir(parents=True, exist_ok=True)
    jobs = [(str(root / TRAIN_DIR / c["fname"]), c["label"], c["seconds"], seed, c["key"])
            for c in clips["train"]]
    jobs += [(str(root / TEST_DIR / c["fname"]), c["label"], c["seconds"], seed, c["key"])
             for c in clips["test"]]
    t0 = time.perf_counter()
    workers = workers or os.cpu_count() or 1
    with ProcessPoolExecutor(workers) as pool:
        for k, _ in enumerate(pool.map(_write, jobs, chunksize=16), 1):
            if progress and (k % 1000 == 0 or k == len(jobs)):
                print(f"  generated {k}/{len(jobs)} clips ({time.perf_counter() - t0:.0f} s)",
                      flush=True)
    with open(root / META / "train_post_competition.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["fname", "label", "manually_verified", "freesound_id", "license"])
        for k, c in enumerate(clips["train"]):
            w.writerow([c["fname"], LABELS[c["written"]], int(c["verified"]), 10_000 + k, "CC0"])
    with open(root / META / "test_post_competition.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["fname", "label", "usage", "freesound_id", "license"])
        for k, c in enumerate(clips["test"]):
            label = "None" if c["usage"] == "Ignored" else LABELS[c["label"]]
            w.writerow([c["fname"], label, c["usage"], 50_000 + k, "CC0"])
    info = {**want, "n_train": len(clips["train"]), "n_test": len(clips["test"]),
            "n_verified": sum(c["verified"] for c in clips["train"]),
            "n_wrong_labels": sum(c["written"] != c["label"] for c in clips["train"]),
            "usage": {u: sum(c["usage"] == u for c in clips["test"])
                      for u in ("Public", "Private", "Ignored")},
            "train_seconds": round(sum(c["seconds"] for c in clips["train"]), 3),
            "test_seconds": round(sum(c["seconds"] for c in clips["test"]), 3),
            "generate_s": round(time.perf_counter() - t0, 1)}
    done.write_text(json.dumps(info, indent=1))
    return info


def true_test_labels(root: str | Path) -> dict[str, str]:
    """fname -> label of the scored test clips (Public and Private), from the set's meta CSV."""
    out = {}
    with open(Path(root) / META / "test_post_competition.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["usage"] in ("Public", "Private"):
                out[row["fname"]] = row["label"]
    return out
