"""`train_fold` through `mlflow run` on the embedded sample with a tiny config, and the pipeline."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[1]

TINY = ["model.width=0.35", "model.dense1=32", "model.dense2=16", "train.batch_size=8",
        "train.crop_min=40", "train.crop_max=90", "train.val_lengths=50,100",
        "train.stage1.cyclic_epochs=1", "train.stage1.plateau_low_epochs=1",
        "train.stage1.plateau_high_epochs=0", "train.stage2.cyclic_epochs=1",
        "train.stage2.plateau_low_epochs=0", "train.stage2.plateau_high_epochs=1",
        "data.synthetic_clips_per_class=3", "pca.n_components=4"]


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
            "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK": "true",
           # the MLproject's `python -m fsd` must be this interpreter, as in an activated venv
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", "TF_CPP_MIN_LOG_LEVEL": "2"}


def _mlflow_run(entry: str, tmp_path: Path, *params: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", entry, "--env-manager", "local",
           "--experiment-name", "it"]
    for p in params:
        cmd += ["-P", p]
    return subprocess.run(cmd, cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_train_fold_through_mlflow_run(tmp_path, monkeypatch):
    common = ["config=experiments/demo.yaml", f"store.cache_dir={tmp_path}/cache",
              f"output_dir={tmp_path}/out", "overrides=" + " ".join(TINY)]
    out = _mlflow_run("featurize", tmp_path, *common)
    assert out.returncode == 0, out.stderr[-3000:]
    out = _mlflow_run("train_fold", tmp_path, "fold=1", *common)
    assert out.returncode == 0, out.stderr[-3000:]

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    client = MlflowClient()
    exp = client.get_experiment_by_name("it")
    (run,) = client.search_runs([exp.experiment_id], "tags.`fsd.stage` = 'train_fold'")
    assert run.info.status == "FINISHED"
    assert run.data.tags["fsd.fold"] == "1" and run.data.tags["fsd.features_run"]
    assert run.data.params["train.fold"] == "1" and run.data.params["model.width"] == "0.35"
    for stage in ("stage1", "stage2"):
        for metric in ("loss", "val_loss", "val_map3", "lr"):
            history = client.get_metric_history(run.info.run_id, f"{stage}/{metric}")
            assert len(history) >= 2, f"{stage}/{metric}"
            assert [h.step for h in history] == sorted(h.step for h in history)
    assert 0.0 <= run.data.metrics["val_map3"] <= 1.0
    fold_files = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "fold")}
    assert {"model.keras", "history.csv", "oof.csv", "projector.joblib"} <= fold_files
    plots = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"training_curves.png", "confusion_matrix.png", "per_class_ap.png"} <= plots


@pytest.mark.slow
def test_train_fold_refuses_bad_input_before_training(tmp_path):
    env = _env(tmp_path)
    base = [sys.executable, "-m", "fsd", "train-fold", "--config", "experiments/demo.yaml",
            f"store.cache_dir={tmp_path}/cache", f"output_dir={tmp_path}/out"]
    out = subprocess.run(base + ["--fold", "7"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "train.fold must be in [0, 2)" in out.stderr
    out = subprocess.run(base, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "no finished featurize run" in out.stderr
