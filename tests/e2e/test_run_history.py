"""A fold's run always carries the whole history of the model it holds, also when it reuses
the fold's finished work or resumes a checkpoint written under another run or tracking store
(issue 11: such a run had no per-epoch curves at all); and what a fold run logs is named
so that no two quantities look alike."""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from fsd.cli import main
from fsd.config import load_config
from fsd.entrypoints.train_fold import fold_workdir

pytestmark = pytest.mark.e2e

TINY = ["train.steps_per_epoch=0",
        "model.width=0.35", "model.dense1=32", "model.dense2=16", "train.batch_size=8",
        "train.crop_min=40", "train.crop_max=90", "train.val_lengths=50,100",
        "train.stage1.cyclic_epochs=2", "train.stage1.plateau_low_epochs=1",
        "train.stage1.plateau_high_epochs=0", "train.stage2.cyclic_epochs=1",
        "train.stage2.plateau_low_epochs=0", "train.stage2.plateau_high_epochs=1",
        "data.synthetic_clips_per_class=3", "pca.n_components=4"]


def _args(tmp_path):
    return ["--config", "experiments/demo.yaml", f"store.cache_dir={tmp_path}/cache",
            f"output_dir={tmp_path}/out", *TINY]


def _fold_run(tracking_uri: str):
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("demo")
    (run,) = client.search_runs([exp.experiment_id], "tags.`fsd.stage` = 'train_fold'")
    return client, run


def _epochs(client, run_id: str) -> pd.DataFrame:
    """The run's per-epoch metrics as (stage, step, metric, value) rows."""
    rows = []
    for stage in ("stage1", "stage2"):
        for metric in ("loss", "val_loss", "val_map3", "val_accuracy", "lr"):
            for m in client.get_metric_history(run_id, f"{stage}/{metric}"):
                rows.append((stage, m.step, metric, m.value))
    return pd.DataFrame(rows, columns=["stage", "step", "metric", "value"])


def _expected(history: pd.DataFrame) -> pd.DataFrame:
    """history.csv as the same rows: the step of an epoch is its row (across both stages)."""
    rows = [(r.stage, step, metric, float(getattr(r, metric)))
            for step, r in history.iterrows()
            for metric in ("loss", "val_loss", "val_map3", "val_accuracy", "lr")]
    return pd.DataFrame(rows, columns=["stage", "step", "metric", "value"])


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    key = ["stage", "step", "metric"]
    a = a.sort_values(key).reset_index(drop=True)
    b = b.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[key], b[key])
    assert a["value"].to_numpy() == pytest.approx(b["value"].to_numpy(), rel=1e-6)


@pytest.mark.slow
def test_a_finished_fold_trained_again_in_a_new_store_carries_its_history(tmp_path,
                                                                          monkeypatch):
    first, second = f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", first)
    assert main(["featurize", *_args(tmp_path)]) == 0
    assert main(["train-fold", "--fold", "0", *_args(tmp_path)]) == 0
    client_a, trained = _fold_run(first)

    cfg = load_config("experiments/demo.yaml", [f"store.cache_dir={tmp_path}/cache",
                                                f"output_dir={tmp_path}/out", *TINY])
    (workdir,) = (tmp_path / "out" / "demo" / "train").glob("*/fold_0")
    history = pd.read_csv(workdir / "history.csv")
    n1 = int((history["stage"] == "stage1").sum())
    assert n1 == 3 and len(history) == 5
    live = _epochs(client_a, trained.info.run_id)
    _same(live, _expected(history))
    # one step axis across both stages: stage 2's first epoch follows stage 1's last
    assert sorted(live.loc[live.stage == "stage2", "step"].unique()) == list(range(n1, 5))

    # the same checkout, a new tracking store: the workdir is complete, nothing is trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", second)
    assert main(["featurize", *_args(tmp_path)]) == 0
    assert main(["train-fold", "--fold", "0", *_args(tmp_path)]) == 0
    client_b, reused = _fold_run(second)
    assert reused.info.run_id != trained.info.run_id
    _same(_epochs(client_b, reused.info.run_id), _expected(history))
    note = reused.data.tags["mlflow.note.content"]
    assert "**Reused**" in note and trained.info.run_id in note and "5 epochs" in note
    assert reused.data.tags["fsd.replayed_epochs"] == "5"
    assert reused.data.metrics["val_map3"] == pytest.approx(trained.data.metrics["val_map3"])
    assert workdir == fold_workdir(cfg, 0, reused.data.tags["fsd.store_key"])


@pytest.mark.slow
def test_a_fold_resumed_from_another_runs_checkpoint_logs_every_epoch(tmp_path, monkeypatch):
    """Training stopped after 2 epochs (no MLflow at all), resumed by `fsd train-fold`: the
    run holds the 2 epochs it did not train, at their steps, and the 3 it trained."""
    from fsd.entrypoints.featurize import resolve_store
    from fsd.train.fit import train_fold

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    assert main(["featurize", *_args(tmp_path)]) == 0
    cfg = load_config("experiments/demo.yaml", [f"store.cache_dir={tmp_path}/cache",
                                                f"output_dir={tmp_path}/out", *TINY])
    store, _ = resolve_store(cfg)
    workdir = fold_workdir(cfg, 0, store.key)
    (workdir).mkdir(parents=True)
    (workdir / "mlflow_run_id").write_text("0123456789abcdef0123456789abcdef")  # another store's

    class Stop(Exception):
        pass

    def stop_after_two(stage, epoch, metrics):
        if stage == "stage1" and epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        train_fold(cfg, store, 0, workdir, on_epoch=stop_after_two, progress=False)
    assert len(pd.read_csv(workdir / "history.csv")) == 2

    assert main(["train-fold", "--fold", "0", *_args(tmp_path)]) == 0
    client, run = _fold_run(f"sqlite:///{tmp_path}/mlflow.db")
    history = pd.read_csv(workdir / "history.csv")
    assert len(history) == 5
    _same(_epochs(client, run.info.run_id), _expected(history))
    note = run.data.tags["mlflow.note.content"]
    assert "**Resumed**" in note and "first 2 epochs" in note and "other 3" in note
    assert "0123456789abcdef0123456789abcdef" in note


@pytest.mark.slow
def test_fold_run_names_one_quantity_once(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    assert main(["featurize", *_args(tmp_path)]) == 0
    assert main(["train-fold", "--fold", "1", *_args(tmp_path)]) == 0
    client, run = _fold_run(f"sqlite:///{tmp_path}/mlflow.db")
    m, p = run.data.metrics, run.data.params
    # bookkeeping counts are params, not single-bar charts
    for count in ("crop_min", "crop_max", "n_train", "n_val", "epochs", "epochs_stage1",
                  "epochs_stage2", "params", "pca_components", "distinct_shapes"):
        assert count not in m
    assert int(p["fold.crop_min"]) == 40 and int(p["fold.crop_max"]) == 90
    assert int(p["fold.epochs"]) == 5 and int(p["fold.model_parameters"]) > 0
    # the best epoch of a stage has its own group, apart from the per-epoch curves
    assert {"best/stage1_val_map3", "best/stage2_val_map3", "val_map3"} <= set(m)
    assert "stage1_val_map3" not in m and "stage2_val_map3" not in m
    # a fold's run logs its own fold, not the sweep's settings
    assert p["train.fold"] == "1" and not any(k.startswith("sweep.") for k in p)
    note = run.data.tags["mlflow.note.content"]
    assert note.startswith("**train_fold 1** of `demo`") and "val MAP@3" in note
