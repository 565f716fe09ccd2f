"""The full-size rehearsal set generated at a tiny scale (worker processes) and read as
FSDKaggle2018, and its driver end to end."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_schedule import ONE_EPOCH

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


sys.path.insert(0, str(REPO / "benchmarks"))
import rehearsal_set  # noqa: E402


@pytest.mark.slow
def test_the_rehearsal_runs_end_to_end_at_a_tiny_scale(tmp_path):
    """Wiring only: 2 folds, one epoch, 2 TTA views, logreg, a one-epoch student; every
    report field present."""
    sets = ["folds.n_folds=2", "baseline.models=[logreg]", "pca.n_components=8",
            "ensemble.tta_n_lengths=2", "ensemble.tta_crops=1", "train.fold_workers=1",
            "distill.schedule.cyclic_epochs=1", "distill.width=0.35",
            *[o for o in ONE_EPOCH if not o.startswith("data.")]]
    cmd = [sys.executable, str(REPO / "benchmarks" / "full_size.py"), "--scale", "0.005",
           "--out", str(tmp_path), "--serve-clips", "3", "--results", str(tmp_path / "r.jsonl"),
           "--student"]
    for s in sets:
        cmd += ["--set", s]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    names = [s["name"] for s in report["stages"]]
    assert names == ["featurize", "train", "baseline", "ensemble", "distill", "serve",
                     "serve-student"]
    for s in report["stages"]:
        assert s["wall_s"] > 0 and s["cpu_s"] > 0 and s["peak_rss_mb"] > 0, s
    assert report["n_train"] >= 41 and report["n_test"] == report["submission_rows"]
    assert report["submission_valid"] is True
    assert 0 <= report["public_map3"] <= 1 and 0 <= report["private_map3"] <= 1
    assert report["served_errors"] == 0 and report["served_p50_ms"] > 0
    # the student: its honest score, its own submission of every test clip, served
    assert 0 <= report["student_metrics"]["student_oof_map3"] <= 1
    assert report["student_submission_valid"] is True
    assert report["student_submission_rows"] == report["n_test"]
    assert 0 <= report["student_private_map3"] <= 1
    assert report["student_served_errors"] == 0 and report["student_served_p50_ms"] > 0
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 1


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_small_scale_is_generated_deterministically_and_read_as_fsdkaggle2018(tmp_path):
    from fsd.data.fsdkaggle2018 import load_fsdkaggle2018

    a = rehearsal_set.generate(tmp_path / "a", 0.005, seed=3, workers=1, progress=False)
    b = rehearsal_set.generate(tmp_path / "b", 0.005, seed=3, workers=2, progress=False)
    assert a["n_train"] >= 41 and a["n_train"] == b["n_train"]
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*")
                   if p.is_file() and p.name != rehearsal_set.DONE)
    assert files and all(_digest(tmp_path / "a" / f) == _digest(tmp_path / "b" / f)
                         for f in files)
    ds = load_fsdkaggle2018(tmp_path / "a")
    assert len(ds.train) == a["n_train"] and len(ds.test) == a["n_test"]
    assert ds.train["label"].nunique() == 41
    # a clip is the same clip at every scale that keeps it
    big = rehearsal_set.plan(0.01, seed=3)["train"]
    small = {c["key"]: c for c in rehearsal_set.plan(0.005, seed=3)["train"]}
    shared = [c for c in big if c["key"] in small]
    assert shared and all(c["seconds"] == small[c["key"]]["seconds"] for c in shared)
    # a finished set is reused, a different scale replaces it
    again = rehearsal_set.generate(tmp_path / "a", 0.005, seed=3, progress=False)
    assert again == a
