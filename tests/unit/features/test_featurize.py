"""The featurize stage end to end: store, folds, rejects, plots, reuse and resume after a kill."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import fsd.features.featurize as fz
from fsd.config import load_config
from fsd.features.store import FeatureStore, StoreError


def _cfg(cache: Path, *extra: str):
    return load_config(None, ["data.source=synthetic", "data.synthetic_clips_per_class=2",
                              f"store.cache_dir={cache}", "folds.n_folds=2", "store.shard_size=4",
                              "store.workers=1", "pca.n_components=5", *extra])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    cfg = _cfg(cache)
    return cfg, fz.featurize(cfg, progress=False)


def test_synthetic_end_to_end(built):
    cfg, res = built
    assert not res.reused
    store = res.store
    n = res.stats["n_clips"]
    assert n == len(store) == 16 and res.stats["n_rejected"] == 0 and res.rejects == []
    idx = store.index
    assert set(idx["fold"]) == {0, 1}
    assert set(idx["label"]) == set(store.labels) and idx["label_id"].between(0, 5).all()
    assert idx["ok"].all() and (idx["frames"] > 0).all()
    assert store.summary.shape == (n, 1133) and np.isfinite(store.summary).all()
    for i in (0, n - 1):
        assert store.logmel(i).shape == (idx["frames"][i], 64)
    meta = store.meta
    assert meta["complete"] and meta["key"] == store.key and Path(res.store_dir).name == store.key
    frames = idx["frames"].to_numpy()
    assert meta["crop_min"] == int(round(np.percentile(frames, 25)))
    assert meta["crop_max"] == int(round(np.percentile(frames, 75))) > meta["crop_min"]
    assert set(meta["config"]) >= {"audio", "logmel", "summary", "folds"}
    assert meta["length_percentiles"]["frames"]["p50"] == pytest.approx(np.median(frames))
    for key in ("n_clips", "n_rejected", "audio_seconds", "elapsed_s", "audio_seconds_per_s",
                "n_test", "crop_min", "crop_max"):
        assert key in res.stats
    assert res.stats["audio_seconds"] == pytest.approx(idx["seconds"].sum())
    assert res.stats["audio_seconds_per_s"] > 0
    assert set(res.plots) == {"length_histogram", "pca_explained_variance"}
    for p in res.plots.values():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    folds = pd.read_csv(res.folds_path)
    assert folds["fname"].tolist() == idx["fname"].tolist()
    assert pd.read_csv(res.rejects_path).empty


def test_rerun_reuses_the_complete_store(built):
    cfg, first = built
    again = fz.featurize(cfg, progress=False)
    assert again.reused and again.store_dir == first.store_dir
    assert again.stats["elapsed_s"] < 5
    assert again.stats["n_clips"] == first.stats["n_clips"]


def test_resume_after_a_kill_recomputes_only_missing_shards(built, tmp_path, monkeypatch):
    cfg, first = built
    cache = tmp_path / "cache"
    shutil.copytree(Path(cfg.store.cache_dir), cache)  # copy2 keeps mtimes: same dataset key
    cfg2 = _cfg(cache)
    root = cache / "features" / first.store.key
    # the kill: consolidated outputs never written, one shard lost mid-run
    (root / "meta.json").unlink()
    shutil.rmtree(root / "train")
    shards = sorted((root / "shards").glob("train-*.npz"))
    assert len(shards) == 4
    lost = shards[2]
    lost.unlink()
    before = {p.name: p.stat().st_mtime_ns for p in shards if p != lost}
    with pytest.raises(StoreError, match="incomplete"):
        FeatureStore.open(root)

    calls: list[str] = []
    real = fz.extract_one
    monkeypatch.setattr(fz, "extract_one", lambda f, p, c: calls.append(f) or real(f, p, c))
    res = fz.featurize(cfg2, progress=False)
    assert not res.reused and res.store_dir == root
    lost_fnames = first.store.index["fname"].tolist()[8:12]
    assert sorted(calls) == sorted(lost_fnames)
    assert res.stats["n_shards_computed"] == 1
    assert {p.name: p.stat().st_mtime_ns for p in shards if p != lost} == before
    assert lost.is_file()
    np.testing.assert_array_equal(res.store.summary, first.store.summary)
    np.testing.assert_array_equal(res.store.logmel_rows, first.store.logmel_rows)


def test_process_pool_gives_the_same_features(built, tmp_path, monkeypatch):
    cfg, first = built
    monkeypatch.setattr(fz, "_POOL_MIN_BYTES", 0)
    cache = tmp_path / "cache"
    shutil.copytree(Path(cfg.store.cache_dir), cache)
    shutil.rmtree(cache / "features")
    res = fz.featurize(_cfg(cache, "store.workers=2"), progress=False)
    assert res.stats["workers"] == 2
    np.testing.assert_array_equal(res.store.summary, first.store.summary)
    np.testing.assert_array_equal(res.store.logmel_rows, first.store.logmel_rows)


def _tone(seconds: float, freq: float) -> np.ndarray:
    t = np.arange(int(seconds * 44100)) / 44100
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_bad_audio_is_rejected_and_failed_test_clips_stay_listed(tmp_path):
    root = tmp_path / "fsd"
    tr, te, meta = (root / d for d in ("FSDKaggle2018.audio_train", "FSDKaggle2018.audio_test",
                                       "FSDKaggle2018.meta"))
    for d in (tr, te, meta):
        d.mkdir(parents=True)
    rows = []
    for i in range(6):
        label = "Cello" if i % 2 else "Flute"
        sf.write(tr / f"t{i}.wav", _tone(0.4 + 0.1 * i, 220 * (1 + i % 2)), 44100)
        rows.append(f"t{i}.wav,{label},1")
    (tr / "broken.wav").write_bytes(b"RIFF....not really a wave file")
    rows.append("broken.wav,Cello,1")
    (meta / "train_post_competition.csv").write_text(
        "fname,label,manually_verified\n" + "\n".join(rows) + "\n")
    sf.write(te / "x0.wav", _tone(0.5, 220), 44100)
    sf.write(te / "x1.wav", _tone(0.7, 440), 44100)
    (te / "empty.wav").write_bytes(b"")
    (meta / "test_post_competition_scoring_clips.csv").write_text(
        "fname,label,usage\nx0.wav,Flute,Public\nx1.wav,Cello,Private\nempty.wav,Cello,Ignored\n")
    cfg = load_config(None, ["data.source=fsdkaggle2018", f"data.root={root}", "folds.n_folds=2",
                             f"store.cache_dir={tmp_path / 'cache'}", "store.workers=1"])
    res = fz.featurize(cfg, progress=False)
    assert [(r.fname, r.stage) for r in res.rejects] == [("broken.wav", "audio")]
    assert "broken.wav" in res.rejects_path.read_text()
    assert res.stats["n_clips"] == 6 and "broken.wav" not in set(res.store.index["fname"])
    test = res.store.open_split("test")
    assert sorted(test.index["fname"]) == ["empty.wav", "x0.wav", "x1.wav"]
    row = test.index.set_index("fname").loc["empty.wav"]
    assert row["frames"] == 0 and not row["ok"] and "empty" in row["reason"]
    assert test.logmel(int(np.flatnonzero(test.index["fname"] == "empty.wav")[0])).shape == (0, 64)
    assert res.stats["n_test"] == 3 and res.stats["n_test_failed"] == 1
    assert set(test.index["label_id"]) <= {0, 1} and (test.index["fold"] == -1).all()
    assert res.store.meta["test_failed"][0]["fname"] == "empty.wav"


def test_real_fixture_clips(shared_data, tmp_path):
    root = shared_data / "fsdkaggle2018-fixture"
    if not root.is_dir():
        pytest.skip(f"{root} is absent: the real-clip fixture lives beside the checkout")
    cfg = load_config(None, ["data.source=fsdkaggle2018", f"data.root={root}", "data.max_clips=10",
                             "folds.n_folds=2", f"store.cache_dir={tmp_path}", "store.workers=1"])
    res = fz.featurize(cfg, progress=False)
    store = res.store
    assert res.stats["n_clips"] == 10 and res.stats["n_rejected"] == 0
    assert store.summary.shape == (10, 1133) and np.isfinite(store.summary).all()
    x = np.concatenate([store.logmel(i) for i in range(len(store))])
    assert 0.0 <= x.min() and x.max() <= 1.0 and 0.2 < x.mean() < 0.8
    # one frame per 220 samples at 22.05 kHz (+1), of the trimmed clip (raw: 1.0-10.2 s)
    idx = store.index
    expected = 1 + idx["seconds"] * 22050 / 220
    assert (np.abs(idx["frames"] - expected) <= 1).all() and idx["frames"].max() <= 1030
