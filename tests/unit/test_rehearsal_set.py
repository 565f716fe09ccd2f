"""The full-size rehearsal set (benchmarks/rehearsal_set.py) at tiny scales."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
import rehearsal_set  # noqa: E402


def test_the_plan_has_the_real_datasets_shape():
    plan = rehearsal_set.plan(1.0, seed=0)
    train, test = plan["train"], plan["test"]
    assert len(train) == 9473 and len(test) == 9400
    counts = Counter(rehearsal_set.LABELS[c["label"]] for c in train)
    assert min(counts.values()) == 94 and max(counts.values()) == 300
    assert sum(c["verified"] for c in train) == 3710  # 39%
    usage = Counter(c["usage"] for c in test)
    assert usage == {"Public": 301, "Private": 1299, "Ignored": 7800}
    seconds = [c["seconds"] for c in train + test]
    assert min(seconds) >= 0.3 and max(seconds) <= 30.0
    assert len({c["fname"] for c in train} | {c["fname"] for c in test}) == 9473 + 9400
    # only unverified labels are ever wrong, about 30% of them
    wrong = [c for c in train if c["written"] != c["label"]]
    assert all(not c["verified"] for c in wrong)
    assert 0.25 < len(wrong) / sum(not c["verified"] for c in train) < 0.35
    # 41 distinct (sound type, pitch) pairs
    assert len({rehearsal_set.sound_of(i) for i in range(len(rehearsal_set.LABELS))}) == 41


def test_the_embedded_counts_are_the_official_metadata(shared_data):
    meta = shared_data / "fsdkaggle2018-meta"
    train = pd.read_csv(meta / "train_post_competition.csv")
    by_label = train.groupby("label")
    assert tuple(by_label.size().index) == rehearsal_set.LABELS
    assert tuple(by_label.size()) == rehearsal_set.TRAIN_COUNTS
    assert tuple(by_label["manually_verified"].sum()) == rehearsal_set.VERIFIED_COUNTS
    test = pd.read_csv(meta / "test_post_competition.csv", keep_default_na=False)
    scored = test[test["usage"] != "Ignored"]
    assert tuple(scored.groupby("label").size()) == rehearsal_set.TEST_COUNTS
    assert Counter(test["usage"]) == {"Public": 301, "Private": 1299, "Ignored": 7800}


def test_a_bad_scale_is_refused():
    with pytest.raises(ValueError, match="scale"):
        rehearsal_set.plan(0.0, seed=0)
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "full_size.py"), "--scale",
                          "2", "--out", "/nonexistent"], capture_output=True, text=True)
    assert out.returncode == 2 and "--scale" in out.stderr
