"""`fsd main`: the whole pipeline as nested runs, and a rerun that skips what is done."""

import os
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from tiny_schedule import ONE_EPOCH

from fsd.cli import main

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]

TINY = [*ONE_EPOCH, "model.width=0.35", "model.dense1=32", "model.dense2=16",
        "ensemble.tta_n_lengths=2", "ensemble.tta_crops=2", "ensemble.model_name=fsd-pipeline-test",
        "baseline.hgb_max_iter=10", "baseline.models=[logreg,hgb,vote]"]


@pytest.mark.slow
def test_main_runs_every_step_nested_then_skips_them(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
    args = ["main", "--config", str(REPO / "experiments" / "demo.yaml"),
            f"store.cache_dir={tmp_path}/cache", f"output_dir={tmp_path}/out", *TINY]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "main run" in printed and "fold 1" in printed
    assert "the models of this run, on the same folds" in printed
    for row in ("baseline logreg", "baseline hgb", "CNN stage 1", "CNN stage 2",
                "CNN fold ensemble (TTA)"):
        assert row in printed

    client = MlflowClient()
    exp = client.get_experiment_by_name("demo")
    runs = client.search_runs([exp.experiment_id])
    by_stage = {}
    for r in runs:
        by_stage.setdefault(r.data.tags["fsd.stage"], []).append(r)
    assert {len(by_stage[s]) for s in ("main", "featurize", "ensemble")} == {1}
    assert len(by_stage["train_fold"]) == 2
    assert sorted(r.data.tags["fsd.baseline"] for r in by_stage["baseline"]) == ["hgb", "logreg",
                                                                               "vote"]
    parent = by_stage["main"][0].info.run_id
    for stage in ("featurize", "train_fold", "baseline", "ensemble"):
        assert all(r.data.tags.get("mlflow.parentRunId") == parent for r in by_stage[stage])
    # the baselines ran before the ensemble, which tried each and kept the best blend
    ens = by_stage["ensemble"][0]
    assert max(r.info.end_time for r in by_stage["baseline"]) <= ens.info.start_time
    import pandas as pd

    tried = pd.read_csv(client.download_artifacts(ens.info.run_id, "blend/blend_candidates.csv",
                                                  str(tmp_path)))
    assert sorted(tried["run_id"]) == sorted(r.info.run_id for r in by_stage["baseline"])
    best = tried.loc[tried["blend_insample_oof_map3"].idxmax()]
    alone = tried.loc[tried["baseline_oof_map3"].idxmax()]
    # the default rule (best) serves the best blend (majority: or, failing it, the best
    # single model)
    assert ens.data.params["blend.rule"] == "best"
    assert ens.data.tags["fsd.blend_baseline_run"] in (best["run_id"], alone["run_id"])
    assert {"blend_weight", "cnn_oof_map3", "oof_accuracy"} <= set(ens.data.metrics)
    main_run = by_stage["main"][0]
    assert main_run.data.metrics["oof_map3"] == ens.data.metrics["oof_map3"]
    table = client.download_artifacts(parent, "results.md", str(tmp_path))
    text = Path(table).read_text()
    assert text.startswith("| model | accuracy | MAP@3 | scored |") and "baseline logreg" in text
    # @champion: only for a model no worse than the best baseline on the same folds
    floor = ens.data.metrics["best_baseline_oof_map3"]
    aliases = client.get_registered_model("fsd-pipeline-test").aliases or {}
    version = client.get_model_version("fsd-pipeline-test", ens.data.tags["fsd.registered_version"])
    assert version.run_id == ens.info.run_id
    if ens.data.metrics["oof_map3"] >= floor:
        held = client.get_model_version_by_alias("fsd-pipeline-test", "champion")
        assert held.version == version.version
    else:
        assert "champion" not in aliases
        assert "best baseline" in ens.data.tags["fsd.alias_reason"]

    # what a user sees in the UI: main carries the headline and links its steps in order
    m = main_run.data.metrics
    # only the headline, each named for what it measures; the children keep their own
    assert set(m) == {"oof_map3", "oof_accuracy", "cnn_oof_map3", "best_baseline_oof_map3"}
    assert m["best_baseline_oof_map3"] == max(r.data.metrics["oof_map3"]
                                              for r in by_stage["baseline"])
    # every step's run names the clip table it read
    for stage in ("main", "featurize", "train_fold", "baseline", "ensemble"):
        for r in by_stage[stage]:
            assert r.inputs.dataset_inputs, f"{stage} run logs no dataset"
    # the fold CNNs and the baselines are LoggedModels the Models tab compares and
    # search_logged_models ranks: folds by their validation, baselines by out of fold
    import mlflow

    exp_id = main_run.info.experiment_id
    folds = mlflow.search_logged_models(experiment_ids=[exp_id], output_format="list",
                                        filter_string="name IN ('cnn-fold-0', 'cnn-fold-1')",
                                        order_by=[{"field_name": "metrics.val_map3",
                                                   "ascending": False}])
    assert sorted(lm.name for lm in folds) == ["cnn-fold-0", "cnn-fold-1"]
    scores = [next(x.value for x in lm.metrics if x.key == "val_map3") for lm in folds]
    assert scores == sorted(scores, reverse=True) and all(lm.model_type == "keras" for lm in folds)
    for lm in folds:
        run = next(r for r in by_stage["train_fold"] if r.info.run_id == lm.source_run_id)
        assert next(x.value for x in lm.metrics if x.key == "val_map3") == \
            run.data.metrics["val_map3"]
        # measured on the fold's own clips (the run's validation input), linked to the clip
        # table they are rows of: every fold names the same dataset, so the Models tab shows
        # the folds' val_map3 in one column
        inputs = {t.value: d.dataset for d in run.inputs.dataset_inputs for t in d.tags
                  if t.key == "mlflow.data.context"}
        assert inputs["validation"].name.endswith(f"-fold{run.data.tags['fsd.fold']}")
        assert {(x.dataset_name, x.dataset_digest) for x in lm.metrics} == \
            {(inputs["training"].name, inputs["training"].digest)}
        assert lm.tags["mlflow.note.content"].startswith(f"**CNN of fold {run.data.tags['fsd.fold']}**")
        assert "train.batch_size" not in lm.params and lm.params["fold"] == run.data.tags["fsd.fold"]
    assert len({(x.dataset_name, x.dataset_digest) for lm in folds for x in lm.metrics}) == 1
    ranked = mlflow.search_logged_models(experiment_ids=[exp_id], output_format="list",
                                         filter_string="name IN ('baseline-logreg', 'baseline-hgb', "
                                                       "'baseline-vote')",
                                         order_by=[{"field_name": "metrics.oof_map3",
                                                    "ascending": False}])
    assert sorted(lm.name for lm in ranked) == ["baseline-hgb", "baseline-logreg", "baseline-vote"]
    oof = [next(x.value for x in lm.metrics if x.key == "oof_map3") for lm in ranked]
    assert oof == sorted(oof, reverse=True)
    # a baseline no better than guessing says so (hgb on 26 clips a fold predicts the prior)
    from fsd.evaluation.metrics import at_chance

    for r in by_stage["baseline"]:
        chance = at_chance(r.data.metrics["oof_accuracy"], int(r.data.params["fit.n_clips"]), 6)
        assert r.data.tags["fsd.at_chance"] == str(chance).lower()
        assert ("**at chance**" in r.data.tags["mlflow.note.content"]) == chance
    # the experiment opens on its runs and says what it holds
    exp = client.get_experiment(exp_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.tags["mlflow.note.content"].startswith("**fsd sound tagging**")
    assert not any(k.startswith(("sweep.", "tracking.")) for k in main_run.data.params)
    assert "train.fold" not in main_run.data.params
    note = main_run.data.tags["mlflow.note.content"]
    assert note.startswith("**pipeline** `demo`") and "Out-of-fold MAP@3" in note
    order = [by_stage["featurize"][0].info.run_id,
             *sorted((r for r in by_stage["train_fold"]), key=lambda r: r.data.tags["fsd.fold"]),
             *by_stage["baseline"], ens]
    ids = [o if isinstance(o, str) else o.info.run_id for o in order]
    positions = [note.index(f"/runs/{rid}?workflowType=machine_learning)")
                 for rid in [*ids[:3], ens.info.run_id]]
    assert positions == sorted(positions)
    for r in runs:
        child_note = r.data.tags.get("mlflow.note.content", "")
        assert child_note and "running." not in child_note, r.data.tags["fsd.stage"]
        if r.info.run_id != parent:
            assert "Parent run: [main]" in child_note
    assert f"#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning" in printed
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    registered = client.get_registered_model("fsd-pipeline-test")
    assert "raw audio in" in registered.description
    assert "out-of-fold MAP@3" in version.description and "2 folds" in version.description
    assert ens.data.tags["fsd.model_uri"]
    logged = sorted(lm.name for lm in client.search_logged_models([exp.experiment_id]))
    assert logged == ["baseline-hgb", "baseline-logreg", "baseline-vote", "cnn-fold-0",
                      "cnn-fold-1", "fsd-pipeline-test-tta-ensemble"]

    # the same command again: featurize and both folds are found and skipped
    assert main(args + ["--no-ensemble"]) == 0
    runs = client.search_runs([exp.experiment_id])
    stages = [r.data.tags["fsd.stage"] for r in runs]
    assert stages.count("main") == 2 and stages.count("featurize") == 1
    assert stages.count("train_fold") == 2 and stages.count("baseline") == 3

    # a changed clip (new mtime) is new data: featurize runs again and fold 0 is retrained
    wav = next((tmp_path / "cache").glob("synthetic-*/*.wav"))
    os.utime(wav, (wav.stat().st_atime, wav.stat().st_mtime + 60))
    assert main(args + ["--no-ensemble", "--no-baseline", "--folds", "0"]) == 0
    stages = [r.data.tags["fsd.stage"] for r in client.search_runs([exp.experiment_id])]
    assert stages.count("featurize") == 2 and stages.count("train_fold") == 3
    assert stages.count("baseline") == 3


@pytest.mark.slow
def test_main_with_distill_runs_the_student_as_its_last_step(tmp_path, monkeypatch, capsys):
    """distill.enabled: the student is a nested step after the ensemble, registered, and the
    main run names it (a tag, its description, the printed summary)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    args = ["main", "--config", str(REPO / "experiments" / "demo.yaml"),
            f"store.cache_dir={tmp_path}/cache", f"output_dir={tmp_path}/out", *TINY,
            "baseline.models=[logreg]", "distill.enabled=true", "distill.width=0.35",
            "distill.schedule.cyclic_epochs=1"]
    assert main(args) == 0
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("demo").experiment_id])
    parent = next(r for r in runs if r.data.tags["fsd.stage"] == "main")
    student = next(r for r in runs if r.data.tags["fsd.stage"] == "distill")
    assert student.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert parent.data.tags["fsd.distill_run"] == student.info.run_id
    assert "student" in parent.data.tags["mlflow.note.content"]
    assert f"distill_run: {student.info.run_id}" in capsys.readouterr().out
    held = client.get_model_version_by_alias("fsd-pipeline-test-student", "champion")
    assert held.run_id == student.info.run_id


@pytest.mark.slow
def test_main_trains_folds_in_worker_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    args = ["main", "--config", str(REPO / "experiments" / "demo.yaml"), "--no-ensemble",
            f"store.cache_dir={tmp_path}/cache", f"output_dir={tmp_path}/out",
            *TINY, "train.fold_workers=2"]
    assert main(args) == 0
    client = MlflowClient()
    exp = client.get_experiment_by_name("demo")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags["fsd.stage"] == "main")
    folds = {int(r.data.tags["fsd.fold"]): r for r in runs if r.data.tags["fsd.stage"] == "train_fold"}
    assert sorted(folds) == [0, 1]
    pids = {r.data.tags["fsd.pid"] for r in folds.values()}
    assert len(pids) == 2 and parent.data.tags["fsd.pid"] not in pids  # two other processes
    for fold, r in folds.items():
        assert r.info.status == "FINISHED"
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert client.get_metric_history(r.info.run_id, "stage1/loss")
        assert r.data.params["train.fold"] == str(fold)
    # comma-separated, as on the ensemble run
    assert parent.data.tags["fsd.fold_runs"] == f"{folds[0].info.run_id},{folds[1].info.run_id}"
    # the baselines ran in the main process while the workers trained
    baselines = [r for r in runs if r.data.tags["fsd.stage"] == "baseline"]
    assert len(baselines) == 3
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in baselines)
    assert {r.data.tags["fsd.pid"] for r in baselines} == {parent.data.tags["fsd.pid"]}
    assert min(r.info.start_time for r in baselines) < max(r.info.end_time for r in folds.values())
    # the same recipe trained in one process would be found and skipped: workers are not part
    # of the training key
    assert main([*args[:-1], "train.fold_workers=1"]) == 0
    stages = [r.data.tags["fsd.stage"] for r in client.search_runs([exp.experiment_id])]
    assert stages.count("train_fold") == 2


def test_failed_fold_workers_are_named_and_the_others_finish(tmp_path, monkeypatch):
    from fsd.config import load_config
    from fsd.entrypoints.fold_workers import FoldWorkerError, train_folds_in_workers

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    cfg = load_config(REPO / "experiments" / "demo.yaml",
                      [f"output_dir={tmp_path}/out", "train.fold_workers=2"])
    # no featurize run exists: each worker fails before training, with a message of its own
    with pytest.raises(FoldWorkerError, match=r"fold 0 \(exit code \d+\), fold 1 \(exit code"):
        train_folds_in_workers(cfg, [0, 1], "0" * 32, "parent", lambda f: tmp_path / "none")
