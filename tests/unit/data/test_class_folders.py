"""A folder of class subfolders as a dataset (``data.source: folder``, ``data.csv: ""``):
labels from the immediate subfolders, nested junk, hidden files, links and unreadable files
as rejects with reasons, stratified folds, resumable featurize."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fsd.config import ConfigError, from_dict
from fsd.data.dataset import DatasetError
from fsd.data.sources import load_dataset


def write_clip(path: Path, seconds: float = 0.3, freq: float = 440.0, fmt: str | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * 8000)) / 8000
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 8000, format=fmt)
    return path


def class_cfg(audio_dir, **extra):
    return from_dict({"data": {"source": "folder", "audio_dir": str(audio_dir), "csv": ""},
                      "folds": {"n_folds": 2}, **extra})


def make_tree(tmp_path: Path) -> tuple[Path, Path]:
    """dogs/ (wav, flac, ogg), rain/ (flac), with nested junk, hidden files, links and a file
    that is no audio; ``outside/`` beside it holds what links must not reach."""
    audio, outside = tmp_path / "sounds", tmp_path / "outside"
    for i in range(3):
        write_clip(audio / "dogs" / f"bark{i}.wav", freq=300 + 50 * i)
        write_clip(audio / "rain" / f"drops{i}.flac", freq=2000 + 100 * i)
    write_clip(audio / "dogs" / "bark3.ogg", freq=330)                # any format soundfile reads
    write_clip(audio / "rain" / "drops3.flac", freq=2500)
    write_clip(audio / "loose.wav")                                    # outside any class folder
    write_clip(audio / "dogs" / "sub" / "deeper" / "nested.wav")       # nested junk
    write_clip(audio / "dogs" / ".hidden.wav")                         # hidden file
    write_clip(audio / ".cache" / "x.wav")                             # hidden folder
    (audio / "rain" / "notes.txt").write_text("not audio")             # unreadable: audio stage
    write_clip(outside / "secret.wav", freq=1234)
    write_clip(outside / "cls" / "s.wav", freq=1234)
    os.symlink(outside / "secret.wav", audio / "dogs" / "escape.wav")  # file link leading out
    os.symlink(outside / "cls", audio / "stolen")                      # class folder link out
    os.symlink(audio / "missing.wav", audio / "rain" / "dangling.wav")  # link to nothing
    os.symlink(audio / "dogs" / "bark0.wav", audio / "rain" / "alias.wav")  # link inside: kept
    return audio, outside


def test_class_subfolders_are_the_labels_and_junk_goes_to_the_rejects(tmp_path):
    audio, _ = make_tree(tmp_path)
    ds = load_dataset(class_cfg(audio))
    assert ds.labels == ["dogs", "rain"]
    kept = dict(zip(ds.train["fname"], ds.train["label"]))
    assert kept == {**{f"dogs/bark{i}.wav": "dogs" for i in range(3)}, "dogs/bark3.ogg": "dogs",
                    **{f"rain/drops{i}.flac": "rain" for i in range(4)},
                    "rain/alias.wav": "rain", "rain/notes.txt": "rain"}
    # paths are resolved once, inside the folder (the link inside points at its target)
    real = os.path.realpath(audio)
    assert all(p.startswith(real + os.sep) for p in ds.train["path"])
    alias = ds.train.set_index("fname").loc["rain/alias.wav", "path"]
    assert alias == os.path.realpath(audio / "dogs" / "bark0.wav")
    reasons = {r.fname: r.reason for r in ds.rejects}
    assert "not in a class folder" in reasons["loose.wav"]
    assert "nested inside class folder 'dogs'" in reasons["dogs/sub/deeper/nested.wav"]
    assert "hidden" in reasons["dogs/.hidden.wav"] and "hidden" in reasons[".cache"]
    assert "leads outside" in reasons["dogs/escape.wav"]
    assert "leads outside" in reasons["stolen/"]
    assert "link to nothing" in reasons["rain/dangling.wav"]
    outside = os.path.realpath(tmp_path / "outside")
    assert not any(p.startswith(outside) for p in ds.train["path"])
    assert all(r.stage == "metadata" for r in ds.rejects)


def test_folds_are_stratified_over_the_classes(tmp_path):
    audio = tmp_path / "sounds"
    for c in ("a", "b", "c"):
        for i in range(6):
            write_clip(audio / c / f"{i}.wav", freq=200 + 100 * i)
    cfg = class_cfg(audio, folds={"n_folds": 3})
    from fsd.features.featurize import _with_folds

    train = _with_folds(load_dataset(cfg).train, cfg)
    counts = train.groupby(["fold", "label"]).size().unstack()
    assert (counts.to_numpy() == 2).all(), counts


def test_group_column_needs_a_csv_and_no_audio_dir_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="folds.group_column needs a CSV"):
        from_dict({"data": {"source": "folder", "audio_dir": "x", "csv": ""},
                   "folds": {"group_column": "take"}})
    with pytest.raises(ConfigError, match="data.audio_dir is required"):
        from_dict({"data": {"source": "folder", "csv": ""}})
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(class_cfg(tmp_path / "nowhere"))
    (tmp_path / "empty" / "only").mkdir(parents=True)
    write_clip(tmp_path / "empty" / "loose.wav")
    with pytest.raises(DatasetError, match="no usable train clip.*not in a class folder"):
        load_dataset(class_cfg(tmp_path / "empty"))


def test_featurize_rejects_unreadable_files_and_resumes(tmp_path):
    """The whole path: unreadable files are audio-stage rejects with the decoder's reason;
    a second featurize reuses the store; an added clip changes the store key."""
    from fsd.features.featurize import featurize

    audio, _ = make_tree(tmp_path)
    cfg = class_cfg(audio, output_dir=str(tmp_path / "out"), pca={"n_components": 2},
                    store={"workers": 1, "shard_size": 4}, summary={"enabled": False})
    first = featurize(cfg, progress=False)
    assert not first.reused
    rejects = {r.fname: (r.stage, r.reason) for r in first.rejects}
    assert rejects["rain/notes.txt"][0] == "audio"
    assert "not decodable" in rejects["rain/notes.txt"][1]
    assert "loose.wav" in rejects and "dogs/sub/deeper/nested.wav" in rejects
    assert set(first.store.index["label"]) == {"dogs", "rain"}
    assert len(first.store.index) == 9
    again = featurize(cfg, progress=False)
    assert again.reused and again.store_dir == first.store_dir
    write_clip(audio / "rain" / "drops9.flac", freq=2600)
    third = featurize(cfg, progress=False)
    assert not third.reused and third.store_dir != first.store_dir


def test_the_data_doc_shows_the_layout_and_a_three_line_config():
    doc = (Path(__file__).resolve().parents[3] / "docs" / "data.md").read_text()
    assert "dogs/" in doc and 'csv: ""' in doc
