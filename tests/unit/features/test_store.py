"""The feature store: shards, consolidation into memory maps, and refusing bad stores."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fsd.config import load_config
from fsd.features.store import (
    ClipResult,
    FeatureStore,
    StoreError,
    consolidate,
    length_stats,
    plan_shards,
    read_meta,
    shard_is_valid,
    store_key,
    write_json,
    write_shard,
)

N_MELS, DIM = 4, 3


def _result(name: str, frames: int, ok: bool = True) -> ClipResult:
    if not ok:
        return ClipResult(name, False, "empty file (0 bytes)", None, None, 0.0)
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    return ClipResult(name, True, "", rng.random((frames, N_MELS), dtype=np.float32),
                      rng.random(DIM, dtype=np.float32), frames * 0.01)


def _index(names: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"fname": names, "label": ["a", "b"] * (len(names) // 2) + ["a"] * (len(names) % 2),
                         "label_id": [0, 1] * (len(names) // 2) + [0] * (len(names) % 2),
                         "fold": np.arange(len(names)) % 2, "verified": True})


def _build(tmp_path, results: list[ClipResult], shard_size: int = 2, float16: bool = True,
           split: str = "train", keep_failed: bool = False):
    names = [r.fname for r in results]
    specs = plan_shards(split, names, shard_size)
    for sp in specs:
        write_shard(tmp_path / "shards" / sp.name, results[sp.start : sp.start + len(sp.fnames)],
                    N_MELS, DIM, float16)
    out = consolidate(tmp_path, split, _index(names), specs, N_MELS, DIM, float16, keep_failed)
    write_json(tmp_path / "meta.json", {"key": "k1", "complete": True, "splits": [split],
                                        "labels": ["a", "b"]})
    return specs, out


def test_shards_consolidate_into_memory_maps(tmp_path):
    results = [_result(f"c{i}.wav", 3 + i) for i in range(5)]
    specs, _ = _build(tmp_path, results)
    assert [sp.number for sp in specs] == [0, 1, 2]
    assert all(shard_is_valid(tmp_path / "shards" / sp.name, sp) for sp in specs)
    store = FeatureStore.open(tmp_path, expected_key="k1")
    assert len(store) == 5 and store.labels == ["a", "b"]
    idx = store.index
    assert list(idx.columns[:9]) == ["fname", "label", "label_id", "fold", "verified", "offset",
                                     "frames", "seconds", "ok"]
    assert idx["offset"].tolist() == [0, 3, 7, 12, 18] and idx["frames"].tolist() == [3, 4, 5, 6, 7]
    assert isinstance(store.logmel_rows, np.memmap) and store.logmel_rows.dtype == np.float16
    for i, r in enumerate(results):
        got = store.logmel(i)
        assert got.dtype == np.float32 and got.shape == r.logmel.shape
        np.testing.assert_allclose(got, r.logmel, atol=5e-4)  # float16 round trip
        np.testing.assert_array_equal(store.summary[i], r.summary)
    assert not list(tmp_path.rglob(".*tmp*"))  # every write was renamed into place


def test_float32_store_is_exact(tmp_path):
    results = [_result(f"c{i}.wav", 4) for i in range(3)]
    _build(tmp_path, results, float16=False)
    store = FeatureStore.open(tmp_path)
    assert store.logmel_rows.dtype == np.float32
    np.testing.assert_array_equal(store.logmel(2), results[2].logmel)


def test_failed_clips_dropped_from_train_kept_in_test(tmp_path):
    results = [_result("a.wav", 3), _result("bad.wav", 0, ok=False), _result("c.wav", 2)]
    _, train = _build(tmp_path / "tr", results)
    assert train["fname"].tolist() == ["a.wav", "c.wav"]
    _, test = _build(tmp_path / "te", results, split="test", keep_failed=True)
    assert test["fname"].tolist() == ["a.wav", "bad.wav", "c.wav"]
    store = FeatureStore.open(tmp_path / "te", split="test")
    row = store.index.iloc[1]
    assert row["frames"] == 0 and not row["ok"] and "empty" in row["reason"]
    assert store.logmel(1).shape == (0, N_MELS)
    assert store.summary.shape == (3, DIM)


def test_missing_incomplete_stale_and_corrupt_stores_are_refused(tmp_path):
    with pytest.raises(StoreError, match="no feature store"):
        FeatureStore.open(tmp_path / "nowhere")
    _build(tmp_path, [_result("a.wav", 3), _result("b.wav", 2)])
    with pytest.raises(StoreError, match="stale"):
        FeatureStore.open(tmp_path, expected_key="other")
    with pytest.raises(StoreError, match="no 'test' split"):
        FeatureStore.open(tmp_path, split="test")
    meta = json.loads((tmp_path / "meta.json").read_text())
    write_json(tmp_path / "meta.json", {**meta, "complete": False})
    with pytest.raises(StoreError, match="incomplete"):
        read_meta(tmp_path)
    write_json(tmp_path / "meta.json", meta)
    (tmp_path / "train" / "summary.npy").unlink()
    with pytest.raises(StoreError, match="summary.npy is missing"):
        FeatureStore.open(tmp_path)
    (tmp_path / "meta.json").unlink()
    with pytest.raises(StoreError, match="interrupted"):
        FeatureStore.open(tmp_path)


def test_shard_names_follow_their_clips_and_detect_mismatch(tmp_path):
    a = plan_shards("train", ["x", "y", "z"], 2)
    b = plan_shards("train", ["x", "y", "w"], 2)
    assert a[0].name == b[0].name and a[1].name != b[1].name
    write_shard(tmp_path / a[1].name, [_result("z", 2)], N_MELS, DIM, True)
    assert shard_is_valid(tmp_path / a[1].name, a[1])
    (tmp_path / b[1].name).write_bytes(b"truncated")
    assert not shard_is_valid(tmp_path / b[1].name, b[1])


def test_length_stats_and_key():
    stats = length_stats(np.array([100, 200, 300, 400, 500]), 0.01)
    assert (stats["crop_min"], stats["crop_max"]) == (200, 400)
    assert stats["seconds"]["p50"] == pytest.approx(3.0)
    same = length_stats(np.array([50, 50]), 0.01)
    assert same["crop_min"] < same["crop_max"]
    cfg = load_config(None, [])
    k = store_key(cfg, "fp1")
    assert k == store_key(cfg, "fp1") and k != store_key(cfg, "fp2")
    assert k != store_key(load_config(None, ["logmel.n_mels=32"]), "fp1")
    assert k == store_key(load_config(None, ["train.fold=3", "store.workers=5"]), "fp1")


def test_leftovers_of_killed_runs_are_removed(tmp_path):
    from fsd.features.store import remove_leftovers

    dead = tmp_path / ".logmel.npy.tmp-999999999"
    mine = tmp_path / f".summary.npy.tmp-{__import__('os').getpid()}"
    keep = tmp_path / "logmel.npy"
    for p in (dead, mine, keep):
        p.write_bytes(b"x")
    assert remove_leftovers(tmp_path) == 2
    assert keep.exists() and not dead.exists() and not mine.exists()
