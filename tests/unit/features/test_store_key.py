"""The store's dtype is part of its key."""

from __future__ import annotations

from pathlib import Path

from audio_clips import small_folder

from fsd.config import from_dict


def test_store_float16_is_part_of_the_store_key(tmp_path):
    from fsd.features.featurize import featurize
    from fsd.features.store import store_key

    cfg = small_folder(tmp_path)
    (Path(cfg.data.audio_dir) / "empty.wav").unlink()
    csv = Path(cfg.data.csv)
    csv.write_text(csv.read_text().replace("empty.wav,low\n", ""))
    half = featurize(cfg, progress=False)
    cfg.store.float16 = False
    full = featurize(cfg, progress=False)
    assert not full.reused and full.store.key != half.store.key
    assert full.store.meta["logmel_dtype"] == "float32"
    assert store_key(cfg, "f") != store_key(from_dict({}), "f")
