"""Fold workers keep starting while the baselines run beside them (issue 16: at full size the
baselines outlast a round of folds, and must not hold the next folds back)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

# Stands in for `python -m fsd train-fold ... --fold K ...`: records that it started, trains
# for a moment, writes its run id where the real worker does.
FAKE_WORKER = """#!/bin/sh
fold=""; prev=""
for a in "$@"; do [ "$prev" = "--fold" ] && fold="$a"; prev="$a"; done
touch "{dir}/started-$fold"
sleep 0.3
echo "run-$fold" > "{dir}/run-$fold"
"""


def test_the_next_folds_start_while_the_baselines_still_run(tmp_path, monkeypatch):
    from fsd.config import load_config
    from fsd.entrypoints.fold_workers import train_folds_in_workers

    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_WORKER.format(dir=tmp_path))
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    cfg = load_config(REPO / "experiments" / "demo.yaml",
                      [f"output_dir={tmp_path}/out", "train.fold_workers=2"])
    seen: list[int] = []

    def slow_baselines() -> None:
        # returns once every fold has started: only if folds start while this runs
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            seen[:] = [k for k in range(5) if (tmp_path / f"started-{k}").exists()]
            if len(seen) == 5:
                return
            time.sleep(0.05)

    runs = train_folds_in_workers(cfg, [0, 1, 2, 3, 4], "f" * 32, "parent",
                                  lambda f: tmp_path / f"run-{f}", poll_s=0.05,
                                  meanwhile=slow_baselines)
    assert seen == [0, 1, 2, 3, 4]
    assert runs == {k: f"run-{k}" for k in range(5)}


def test_an_error_in_the_work_beside_stops_the_workers(tmp_path, monkeypatch):
    from fsd.config import load_config
    from fsd.entrypoints.fold_workers import train_folds_in_workers

    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_WORKER.format(dir=tmp_path).replace("sleep 0.3", "sleep 30"))
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    cfg = load_config(REPO / "experiments" / "demo.yaml",
                      [f"output_dir={tmp_path}/out", "train.fold_workers=2"])

    def failing() -> None:
        raise RuntimeError("baseline failed")

    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="baseline failed"):
        train_folds_in_workers(cfg, [0, 1, 2], "f" * 32, "parent",
                               lambda f: tmp_path / f"run-{f}", poll_s=0.05, meanwhile=failing)
    assert time.monotonic() - t0 < 20  # the running workers were terminated, not awaited
    assert not (tmp_path / "started-2").exists()
