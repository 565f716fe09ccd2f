"""`train_fold` through `mlflow run` on the embedded sample with a tiny config, and the pipeline."""

from pathlib import Path

import pytest
from launch import fsd_command, mlflow_run
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.e2e

TINY = ["train.steps_per_epoch=0",
        "model.width=0.35", "model.dense1=32", "model.dense2=16", "train.batch_size=8",
        "train.crop_min=40", "train.crop_max=90", "train.val_lengths=50,100",
        "train.stage1.cyclic_epochs=1", "train.stage1.plateau_low_epochs=1",
        "train.stage1.plateau_high_epochs=0", "train.stage2.cyclic_epochs=1",
        "train.stage2.plateau_low_epochs=0", "train.stage2.plateau_high_epochs=1",
        "data.synthetic_clips_per_class=3", "pca.n_components=4"]


@pytest.mark.slow
def test_train_fold_throughmlflow_run(tmp_path, monkeypatch):
    common = ["config=experiments/demo.yaml", f"store.cache_dir={tmp_path}/cache",
              f"output_dir={tmp_path}/out", "overrides=" + " ".join(TINY)]
    out = mlflow_run("featurize", tmp_path, *common)
    assert out.returncode == 0, out.stderr[-3000:]
    out = mlflow_run("train_fold", tmp_path, "fold=1", *common)
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
    base = ["train-fold", "--config", "experiments/demo.yaml",
            f"store.cache_dir={tmp_path}/cache", f"output_dir={tmp_path}/out"]
    out = fsd_command(tmp_path, *base, "--fold", "7")
    assert out.returncode == 2 and "train.fold must be in [0, 2)" in out.stderr
    out = fsd_command(tmp_path, *base)
    assert out.returncode == 2 and "no finished featurize run" in out.stderr


@pytest.mark.slow
def test_featurize_and_train_fold_on_the_real_fixture(tmp_path, monkeypatch, shared_data):
    """The 30 real FSDKaggle2018 clips, through the same commands a user types."""
    from fsd.cli import main

    root = shared_data / "fsdkaggle2018-fixture"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    args = ["--config", "experiments/demo.yaml", "data.source=fsdkaggle2018", f"data.root={root}",
            f"store.cache_dir={tmp_path}/cache", f"output_dir={tmp_path}/out", *TINY]
    assert main(["featurize", "--strict", *args]) == 0
    assert main(["train-fold", "--fold", "0", *args]) == 0

    client = MlflowClient()
    exp = client.get_experiment_by_name("demo")
    (featurized,) = client.search_runs([exp.experiment_id], "tags.`fsd.stage` = 'featurize'")
    p = featurized.data.params
    assert p["featurize.n_clips"] == "30" and p["featurize.n_rejected"] == "0"
    (trained,) = client.search_runs([exp.experiment_id], "tags.`fsd.stage` = 'train_fold'")
    assert trained.info.status == "FINISHED"
    assert 0.0 <= trained.data.metrics["val_map3"] <= 1.0
    oof = {Path(a.path).name for a in client.list_artifacts(trained.info.run_id, "fold")}
    assert "oof.csv" in oof
