"""Steps against hostile history: a --strict failure stops later steps, runs of dead processes are
marked KILLED, a fold continuing an interrupted run names it, featurize runs through a
malformed row."""

from __future__ import annotations

import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest
from audio_clips import small_folder, write_clip

from fsd.config import from_dict

pytestmark = pytest.mark.e2e


@pytest.fixture
def sqlite_tracking(tmp_path):
    from conftest_ensemble import tracking_at

    with tracking_at(f"sqlite:///{tmp_path}/mlflow.db"):
        yield


def test_a_strict_failure_fails_the_run_and_later_steps_refuse_it(tmp_path, sqlite_tracking):
    import mlflow

    from fsd import tracking
    from fsd.config import ConfigError
    from fsd.entrypoints import featurize as step

    cfg = small_folder(tmp_path)
    assert step.run(cfg, Namespace(strict=True)) == 3
    run = tracking.find_runs(cfg, "featurize", finished_only=False)[0]
    assert run.info.status == "FAILED"
    assert run.data.tags[tracking.TAG_STRICT_FAILED].startswith("1 clips")
    with pytest.raises(ConfigError, match="failed --strict"):
        step.resolve_store(cfg, run.info.run_id)
    with pytest.raises(ConfigError, match="failed --strict"):
        step.resolve_store(cfg)
    # without --strict the same data is accepted, and the step after it finds that run
    assert step.run(cfg, Namespace(strict=False)) == 0
    store, used = step.resolve_store(cfg)
    assert used != run.info.run_id and mlflow.get_run(used).info.status == "FINISHED"


def test_runs_of_dead_processes_are_marked_killed_on_the_next_step(tmp_path, sqlite_tracking):
    from mlflow.tracking import MlflowClient

    from fsd import tracking

    cfg = from_dict({"name": "reap", "output_dir": str(tmp_path / "out")})
    exp_id = tracking.set_experiment(cfg)
    # a process that starts a run and is killed -9 (no chance to end it)
    script = ("import os, mlflow, sys\n"
              "from fsd import tracking\n"
              f"mlflow.set_experiment(experiment_id={exp_id!r})\n"
              "r = mlflow.start_run(tags={**tracking.process_tags(), tracking.TAG_STAGE: "
              f"'featurize', tracking.TAG_CONFIG: {cfg.name!r}}})\n"
              "print(r.info.run_id, flush=True)\n"
              "os.kill(os.getpid(), 9)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, env={**os.environ})
    dead_id = out.stdout.split()[0]
    client = MlflowClient()
    assert client.get_run(dead_id).info.status == "RUNNING"
    # a run of this (living) process and one of another host stay as they are
    alive = client.create_run(exp_id, tags=tracking.process_tags())
    other = client.create_run(exp_id, tags={**tracking.process_tags(), tracking.TAG_HOST: "elsewhere"})
    with tracking.stage_run(cfg, "featurize") as run:
        pass
    assert client.get_run(dead_id).info.status == "KILLED"
    assert "was gone" in client.get_run(dead_id).data.tags[tracking.TAG_REAPED]
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"
    assert client.get_run(other.info.run_id).info.status == "RUNNING"
    tags = client.get_run(run.info.run_id).data.tags
    assert tags[tracking.TAG_PID] == str(os.getpid()) and tags[tracking.TAG_HOST]
    assert tags[tracking.TAG_CONTINUES] == dead_id  # the featurize run it resumes


def test_a_fold_continuing_an_interrupted_run_names_it(tmp_path, sqlite_tracking, monkeypatch):
    from mlflow.tracking import MlflowClient

    from fsd import tracking
    from fsd.entrypoints import train_fold as step

    cfg = from_dict({"name": "cont", "output_dir": str(tmp_path / "out")})
    exp_id = tracking.set_experiment(cfg)
    client = MlflowClient()
    dead = client.create_run(exp_id, tags={**tracking.process_tags(999_999_999)})
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / step.RUN_ID_FILE).write_text(dead.info.run_id)
    launched = client.create_run(exp_id)  # what `mlflow run` opens for the new attempt
    monkeypatch.setenv("MLFLOW_RUN_ID", launched.info.run_id)
    monkeypatch.setattr(step, "fold_workdir", lambda *a: workdir)

    class Store:
        key = "k" * 16

    def fake_train(cfg, store, fold, workdir, on_epoch=None, progress=True):
        (workdir / "result.json").write_text("{}")

    import fsd.train.fit as fit
    monkeypatch.setattr(fit, "train_fold", fake_train)
    step.train_fold_logged(cfg, Store(), "features-run")
    assert client.get_run(dead.info.run_id).info.status == "KILLED"
    tags = client.get_run(launched.info.run_id).data.tags
    assert tags[tracking.TAG_CONTINUES] == dead.info.run_id


def test_featurize_runs_through_a_malformed_row(tmp_path):
    audio = tmp_path / "audio"
    for i in range(6):
        write_clip(audio / f"c{i}.wav", seconds=0.4, freq=300 + 200 * (i % 2))
    csv = tmp_path / "meta.csv"
    csv.write_bytes(b"fname,label\n" + b"".join(
        f"c{i}.wav,{'AB'[i % 2]}\n".encode() for i in range(6)) + b"x.wav,\"A,\xff\n")
    out = subprocess.run(
        [sys.executable, "-m", "fsd", "featurize", "--config", "experiments/demo.yaml",
         "data.source=folder", f"data.audio_dir={audio}", f"data.csv={csv}",
         "data.verified_column=", f"output_dir={tmp_path}/out", "folds.n_folds=2",
         "pca.n_components=2", "store.workers=1", "summary.enabled=false"],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=600,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
