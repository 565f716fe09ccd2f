"""load_dataset over its three sources, metadata problems as rejects, max_clips, fingerprint."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from fsd.config import Config, from_dict
from fsd.data.audio import load_audio
from fsd.data.dataset import TEST_COLUMNS, TRAIN_COLUMNS, DatasetError
from fsd.data.rejects import Reject
from fsd.data.sources import load_dataset
from fsd.folds import assign_folds

TRAIN = [("a1.wav", "Bark", 1), ("a2.wav", "Bark", 0), ("a3.wav", "Bark", 1),
         ("b1.wav", "Meow", 1), ("b2.wav", "Meow", 0), ("b3.wav", "Meow", 1)]


def write_clip(path: Path, seconds: float = 0.05, freq: float = 440.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * 8000)) / 8000
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 8000)
    return path


def write_csv(path: Path, header: str, rows: list[tuple]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def make_fsd(root: Path, rows=TRAIN, csv: str = "post", files=None) -> Path:
    """An FSDKaggle2018 layout; ``csv``: post (meta/train_post_competition.csv), kaggle_root
    (train.csv under the root) or kaggle_meta (meta/train.csv)."""
    for fname in files if files is not None else [r[0] for r in rows]:
        write_clip(root / "FSDKaggle2018.audio_train" / fname)
    if csv == "post":
        write_csv(root / "FSDKaggle2018.meta" / "train_post_competition.csv",
                  "fname,label,manually_verified,freesound_id,license",
                  [(*r, 1000 + i, "Attribution") for i, r in enumerate(rows)])
    else:
        where = root if csv == "kaggle_root" else root / "FSDKaggle2018.meta"
        write_csv(where / "train.csv", "fname,label,manually_verified", rows)
    return root


def fsd_cfg(root: Path, **data) -> Config:
    return from_dict({"data": {"source": "fsdkaggle2018", "root": str(root), **data}})


def folder_cfg(audio_dir, csv, **data) -> Config:
    return from_dict({"data": {"source": "folder", "audio_dir": str(audio_dir), "csv": str(csv),
                               **data}})


def reasons(ds) -> dict[str, str]:
    return {r.fname: r.reason for r in ds.rejects}


# --- fsdkaggle2018 ------------------------------------------------------------------------


@pytest.mark.parametrize("csv", ["post", "kaggle_root", "kaggle_meta"])
def test_fsdkaggle2018_layout_and_both_csv_formats(tmp_path, csv):
    ds = load_dataset(fsd_cfg(make_fsd(tmp_path, csv=csv)))
    assert ds.name == "fsdkaggle2018"
    assert list(ds.train.columns) == TRAIN_COLUMNS
    assert ds.train["fname"].tolist() == [r[0] for r in TRAIN]  # the CSV's order
    assert ds.train["label"].tolist() == [r[1] for r in TRAIN]
    assert ds.train["verified"].tolist() == [bool(r[2]) for r in TRAIN]
    assert ds.train["verified"].dtype == bool and ds.train["fold"].dtype == np.int64
    assert (ds.train["fold"] == -1).all()
    assert all(os.path.isabs(p) and os.path.isfile(p) for p in ds.train["path"])
    assert ds.labels == ["Bark", "Meow"]
    assert ds.test is None and ds.rejects == []


def test_fsdkaggle2018_test_split_keeps_every_clip(tmp_path):
    root = make_fsd(tmp_path)
    test_dir = root / "FSDKaggle2018.audio_test"
    for name in ("t1.wav", "t2.wav", "t3.wav", "t4.wav"):
        write_clip(test_dir / name)
    (test_dir / "t0.wav").write_bytes(b"")  # the real test set has three empty clips
    write_csv(root / "FSDKaggle2018.meta" / "test_post_competition_scoring_clips.csv",
              "fname,label,usage,freesound_id,license",
              [("t1.wav", "Bark", "Public", 1, "CC0"), ("t2.wav", "Meow", "Private", 2, "CC0"),
               ("t3.wav", "Moo", "Private", 3, "CC0"), ("gone.wav", "Bark", "Public", 4, "CC0"),
               ("t1.wav", "Meow", "Public", 5, "CC0")])
    ds = load_dataset(fsd_cfg(root))
    test = ds.test.set_index("fname")
    assert list(ds.test.columns) == TEST_COLUMNS
    assert sorted(test.index) == ["t0.wav", "t1.wav", "t2.wav", "t3.wav", "t4.wav"]
    assert test["label"].to_dict() == {"t0.wav": "", "t1.wav": "Bark", "t2.wav": "Meow",
                                       "t3.wav": "", "t4.wav": ""}
    assert test.loc["t2.wav", "usage"] == "Private" and test.loc["t4.wav", "usage"] == ""
    r = reasons(ds)
    assert "'Moo'" in r["t3.wav"] and "not a train label" in r["t3.wav"]
    assert "no such file" in r["gone.wav"]
    assert "duplicate" in r["t1.wav"]
    assert all(x.stage == "metadata" for x in ds.rejects)
    assert ds.labels == ["Bark", "Meow"]  # test labels never add classes


def test_fsdkaggle2018_full_test_csv_none_means_unlabelled(tmp_path):
    root = make_fsd(tmp_path)
    for name in ("t1.wav", "t2.wav"):
        write_clip(root / "FSDKaggle2018.audio_test" / name)
    write_csv(root / "FSDKaggle2018.meta" / "test_post_competition.csv",
              "fname,label,usage,freesound_id,license",
              [("t1.wav", "None", "Ignored", 1, "CC0"), ("t2.wav", "Bark", "Public", 2, "CC0")])
    ds = load_dataset(fsd_cfg(root))
    assert ds.test["label"].tolist() == ["", "Bark"]
    assert ds.test["usage"].tolist() == ["Ignored", "Public"]
    assert ds.rejects == []


def test_fsdkaggle2018_metadata_problems_become_rejects(tmp_path):
    rows = TRAIN + [("missing.wav", "Bark", 1), ("nolabel.wav", "", 1), ("a1.wav", "Meow", 1),
                    ("badver.wav", "Bark", "maybe")]
    files = [r[0] for r in TRAIN] + ["nolabel.wav", "extra.wav", "badver.wav"]
    ds = load_dataset(fsd_cfg(make_fsd(tmp_path, rows=rows, files=files)))
    assert ds.train["fname"].tolist() == [r[0] for r in TRAIN]
    assert ds.train.set_index("fname").loc["a1.wav", "label"] == "Bark"  # first row kept
    r = reasons(ds)
    assert set(r) == {"missing.wav", "nolabel.wav", "a1.wav", "extra.wav", "badver.wav"}
    assert "no such file" in r["missing.wav"]
    assert "empty label" in r["nolabel.wav"]
    assert "duplicate" in r["a1.wav"] and "first row is kept" in r["a1.wav"]
    assert "not listed" in r["extra.wav"]
    assert "'maybe'" in r["badver.wav"]
    assert {x.stage for x in ds.rejects} == {"metadata"}


def test_fsdkaggle2018_missing_column_names_what_is_there(tmp_path):
    root = tmp_path
    write_clip(root / "FSDKaggle2018.audio_train" / "a.wav")
    write_csv(root / "FSDKaggle2018.meta" / "train_post_competition.csv", "fname,category",
              [("a.wav", "Bark")])
    with pytest.raises(DatasetError, match=r"lacks column\(s\) 'label', 'manually_verified'.*"
                                           r"it has: 'fname', 'category'"):
        load_dataset(fsd_cfg(root))


def test_fsdkaggle2018_missing_pieces_are_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(fsd_cfg(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match="no train audio folder"):
        load_dataset(fsd_cfg(tmp_path))
    write_clip(tmp_path / "FSDKaggle2018.audio_train" / "a.wav")
    with pytest.raises(DatasetError, match="no train CSV"):
        load_dataset(fsd_cfg(tmp_path))


def test_no_usable_clip_is_an_error_with_reasons(tmp_path):
    (tmp_path / "FSDKaggle2018.audio_train").mkdir()
    root = make_fsd(tmp_path, rows=[("a.wav", "Bark", 1)], files=[])
    with pytest.raises(DatasetError,
                       match="no usable train clip.*a.wav: train_post_competition.csv line 2: no such"):
        load_dataset(fsd_cfg(root))


# --- folder + CSV -------------------------------------------------------------------------


def test_folder_with_1_based_folds_and_no_verified_column(tmp_path):
    rows = [(f"c{i}.ogg", "Rain" if i % 2 else "Dog", i % 3 + 1) for i in range(9)]
    audio = tmp_path / "audio"
    for r in rows:
        write_clip(audio / r[0])
    (audio / "README.txt").write_text("not audio, not a clip")
    csv = write_csv(tmp_path / "meta.csv", "fname,label,fold,take", [(*r, "A") for r in rows])
    ds = load_dataset(folder_cfg(audio, csv, fold_column="fold"))
    assert ds.train["fold"].tolist() == [r[2] - 1 for r in rows]
    assert ds.train["verified"].all()
    assert ds.labels == ["Dog", "Rain"] and ds.rejects == [] and ds.test is None
    assert ds.name == tmp_path.name


def test_folder_paths_are_taken_under_data_root(tmp_path):
    write_clip(tmp_path / "audio" / "x.wav")
    write_csv(tmp_path / "labels.csv", "file,cls,ok", [("x.wav", "Hum", "false")])
    cfg = from_dict({"data": {"source": "folder", "root": str(tmp_path), "audio_dir": "audio",
                              "csv": "labels.csv", "file_column": "file", "label_column": "cls",
                              "verified_column": "ok"}})
    ds = load_dataset(cfg)
    assert ds.train["fname"].tolist() == ["x.wav"] and ds.train["verified"].tolist() == [False]


def test_folder_bad_fold_values_are_rejected(tmp_path):
    values = {"ok0.wav": "1", "ok1.wav": "2.0", "neg.wav": "-1", "frac.wav": "1.5",
              "word.wav": "two", "blank.wav": ""}
    for name in values:
        write_clip(tmp_path / "audio" / name)
    csv = write_csv(tmp_path / "meta.csv", "fname,label,fold",
                    [(n, "Hum", v) for n, v in values.items()])
    ds = load_dataset(folder_cfg(tmp_path / "audio", csv, fold_column="fold"))
    assert ds.train.set_index("fname")["fold"].to_dict() == {"ok0.wav": 0, "ok1.wav": 1}
    r = reasons(ds)
    assert set(r) == {"neg.wav", "frac.wav", "word.wav", "blank.wav"}
    assert "'-1'" in r["neg.wav"] and "non-negative integer" in r["neg.wav"]
    assert "'two'" in r["word.wav"]


def test_folder_missing_fold_column_is_an_error(tmp_path):
    write_clip(tmp_path / "audio" / "a.wav")
    csv = write_csv(tmp_path / "meta.csv", "fname,label", [("a.wav", "Hum")])
    with pytest.raises(DatasetError, match=r"lacks column\(s\) 'split'.*it has: 'fname', 'label'"):
        load_dataset(folder_cfg(tmp_path / "audio", csv, fold_column="split"))


def test_folder_missing_dir_or_csv_is_an_error(tmp_path):
    csv = write_csv(tmp_path / "meta.csv", "fname,label", [("a.wav", "Hum")])
    with pytest.raises(DatasetError, match="audio_dir .* does not exist"):
        load_dataset(folder_cfg(tmp_path / "nope", csv))
    (tmp_path / "audio").mkdir()
    with pytest.raises(DatasetError, match="data.csv .* does not exist"):
        load_dataset(folder_cfg(tmp_path / "audio", tmp_path / "none.csv"))


def test_folder_metadata_problems_become_rejects(tmp_path):
    audio = tmp_path / "audio"
    for name in ("a.wav", "b.flac", "dup.wav", "nan.wav", "stray.ogg"):
        write_clip(audio / name)
    csv = tmp_path / "meta.csv"
    csv.write_text("fname,label\na.wav,Hum\nb.flac,Buzz\ndup.wav,Hum\ndup.wav,Buzz\n"
                   "nan.wav,NaN\nghost.wav,Hum\n,Hum\n")
    ds = load_dataset(folder_cfg(audio, csv))
    assert ds.train["fname"].tolist() == ["a.wav", "b.flac", "dup.wav"]
    r = reasons(ds)
    assert "duplicate" in r["dup.wav"] and "empty label" in r["nan.wav"]
    assert "no such file" in r["ghost.wav"] and "not listed" in r["stray.ogg"]
    assert "empty 'fname'" in r["meta.csv:8"]
    assert Reject("stray.ogg", "metadata", "audio file not listed in meta.csv") in ds.rejects


# --- synthetic ----------------------------------------------------------------------------


def test_synthetic_source_generates_into_the_cache_and_reuses_it(tmp_path):
    cfg = from_dict({"data": {"source": "synthetic", "synthetic_clips_per_class": 2},
                     "store": {"cache_dir": str(tmp_path)}})
    ds = load_dataset(cfg)
    (folder,) = [p for p in tmp_path.iterdir()]
    assert folder.name.startswith("synthetic-") and (folder / "labels.csv").is_file()
    assert ds.name == "synthetic"
    assert ds.labels == sorted(["low_hum", "chirp", "clicks", "hiss", "pulses", "chord"])
    assert len(ds.train) == 6 * 2 + 4 and ds.rejects == []
    assert (~ds.train["verified"]).sum() == 0  # 2 a class: the unverified 4th clip is absent
    assert all(Path(p).parent == folder for p in ds.train["path"])
    again = load_dataset(cfg)
    assert again.fingerprint() == ds.fingerprint()
    other = load_dataset(from_dict({"data": {"source": "synthetic", "synthetic_clips_per_class": 2,
                                             "synthetic_seed": 1},
                                    "store": {"cache_dir": str(tmp_path)}}))
    assert len(list(tmp_path.iterdir())) == 2 and other.fingerprint() != ds.fingerprint()


# --- max_clips ----------------------------------------------------------------------------


def test_max_clips_deals_round_robin_over_classes(tmp_path):
    rows = [(f"a{i}.wav", "A", 1) for i in range(6)] + [(f"b{i}.wav", "B", 1) for i in range(2)] \
        + [(f"c{i}.wav", "C", 1) for i in range(4)]
    root = make_fsd(tmp_path, rows=rows)
    ds = load_dataset(fsd_cfg(root, max_clips=7))
    # rounds: a0 b0 c0 | a1 b1 c1 | a2 -> kept in CSV order
    assert ds.train["fname"].tolist() == ["a0.wav", "a1.wav", "a2.wav", "b0.wav", "b1.wav",
                                          "c0.wav", "c1.wav"]
    assert ds.labels == ["A", "B", "C"]
    assert load_dataset(fsd_cfg(root, max_clips=7)).train.equals(ds.train)
    write_clip(root / "FSDKaggle2018.audio_test" / "t.wav")
    write_csv(root / "FSDKaggle2018.meta" / "test_post_competition.csv", "fname,label,usage",
              [("t.wav", "C", "Public")])
    two = load_dataset(fsd_cfg(root, max_clips=2))
    assert two.labels == ["A", "B"]
    assert two.test["label"].tolist() == [""]  # class C is out of this quick run
    assert len(load_dataset(fsd_cfg(root, max_clips=100)).train) == len(rows)


# --- fingerprint --------------------------------------------------------------------------


def test_fingerprint_is_stable_and_follows_the_files(tmp_path):
    root = make_fsd(tmp_path)
    first = load_dataset(fsd_cfg(root))
    fp = first.fingerprint()
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert load_dataset(fsd_cfg(root)).fingerprint() == fp
    write_clip(root / "FSDKaggle2018.audio_train" / "a1.wav", seconds=0.07)  # content changes
    assert first.fingerprint() != fp  # stat'ed when asked
    fp2 = load_dataset(fsd_cfg(root)).fingerprint()
    assert fp2 != fp
    path = root / "FSDKaggle2018.audio_train" / "b1.wav"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # touched, same size
    assert load_dataset(fsd_cfg(root)).fingerprint() != fp2
    relabelled = load_dataset(fsd_cfg(root))
    before = relabelled.fingerprint()
    relabelled.train.loc[0, "label"] = "Meow"
    assert relabelled.fingerprint() != before


# --- real data beside the checkout ------------------------------------------------------------


def test_real_fsdkaggle2018_fixture(shared_data):
    root = shared_data / "fsdkaggle2018-fixture"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    ds = load_dataset(fsd_cfg(root))
    assert len(ds.train) == 30 and ds.rejects == [] and ds.test is None
    assert len(ds.labels) == 5
    assert ds.train["label"].value_counts().tolist() == [6] * 5
    assert ds.train["verified"].dtype == bool
    y = load_audio(ds.train["path"][0], Config().audio)
    assert y.dtype == np.float32 and 0.5 < len(y) / 44100 < 31


def test_real_esc10_with_its_folds(shared_data):
    root = shared_data / "esc10"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    cfg = from_dict({"data": {"source": "folder", "root": str(root), "audio_dir": "audio",
                              "csv": "meta.csv", "fold_column": "fold", "verified_column": ""},
                     "folds": {"use_dataset_folds": True, "n_folds": 5}})
    ds = load_dataset(cfg)
    assert len(ds.train) == 400 and len(ds.labels) == 10 and ds.rejects == []
    assert sorted(ds.train["fold"].unique()) == [0, 1, 2, 3, 4]
    folds = assign_folds(ds.train["label"], cfg.folds, ds.train["fold"].to_numpy())
    assert np.bincount(folds).tolist() == [80] * 5
    meta = pd.read_csv(root / "meta.csv")
    assert (folds == meta["fold"].to_numpy() - 1).all()
    y = load_audio(ds.train["path"][0], cfg.audio)  # Ogg Vorbis; a short bark padded to 5 s
    assert y.dtype == np.float32 and 0.1 < len(y) / 44100 < 5.0


def test_real_full_metadata_scales(shared_data, tmp_path):
    """The whole dataset's metadata over empty placeholder files: loads fast, every test clip."""
    meta = shared_data / "fsdkaggle2018-meta"
    if not meta.is_dir():
        pytest.skip(f"{meta} is absent")
    root = tmp_path / "full"
    (root / "FSDKaggle2018.meta").mkdir(parents=True)
    for split, csv in (("train", "train_post_competition.csv"), ("test", "test_post_competition.csv")):
        table = pd.read_csv(meta / csv)
        (root / "FSDKaggle2018.meta" / csv).write_bytes((meta / csv).read_bytes())
        folder = root / f"FSDKaggle2018.audio_{split}"
        folder.mkdir()
        for fname in table["fname"]:
            (folder / fname).touch()
    ds = load_dataset(fsd_cfg(root))
    assert len(ds.train) == 9473 and len(ds.labels) == 41 and len(ds.test) == 9400
    assert (ds.test["label"] != "").sum() == 1600 and ds.rejects == []
    assert ds.train["verified"].sum() == 3710


def test_folder_group_column_reaches_the_train_frame(tmp_path):
    rows = [(f"c{i}.wav", "Rain" if i % 2 else "Dog", f"src{i // 2}" if i < 6 else "")
            for i in range(8)]
    for r in rows:
        write_clip(tmp_path / "audio" / r[0])
    csv = write_csv(tmp_path / "meta.csv", "fname,label,src_file", rows)
    cfg = folder_cfg(tmp_path / "audio", csv)
    cfg.folds.group_column = "src_file"
    ds = load_dataset(cfg)
    # a blank group makes the clip a group of its own
    assert ds.train["group"].tolist() == ["src0", "src0", "src1", "src1", "src2", "src2",
                                          "c6.wav", "c7.wav"]
    cfg.folds.group_column = "session"
    with pytest.raises(DatasetError, match="session"):
        load_dataset(cfg)
