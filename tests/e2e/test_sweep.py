"""The sweep's trials: the objective over training, trial runs under one parent, and `fsd sweep`."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sweep_stand_ins import scripted_train, sweep_config

from fsd import tracking
from fsd.config import load_config
from fsd.sweep import study

pytestmark = pytest.mark.e2e


REPO = Path(__file__).resolve().parents[2]


optuna.logging.set_verbosity(optuna.logging.WARNING)


class Recorder(study.TrialTracker):
    def __init__(self) -> None:
        self.epochs: list[tuple[int, str, int]] = []
        self.finished: dict[int, tuple[TrialState, float | None]] = {}
        self.current = -1

    def start(self, trial, params, cfg):
        self.current = trial.number

    def on_epoch(self, fold):
        return lambda stage, epoch, m: self.epochs.append((self.current, stage, epoch))

    def finish(self, trial, state, value, error):
        self.finished[trial.number] = (state, value)


def test_objective_reports_global_steps_prunes_and_survives_failures(tmp_path):
    cfg = sweep_config(tmp_path, folds=[0, 1], cyclic_epochs=2, plateau_low_epochs=1,
               plateau_high_epochs=1, pruner="median")
    opt = study.open_study(cfg, optuna.storages.InMemoryStorage())
    rec = Recorder()
    # trials 0 and 1 start the median; 2 fails; 3 is far worse after warm-up and is pruned
    objective = study.Objective(cfg, store=None, root=tmp_path / "s", tracker=rec,
                                train_fn=scripted_train({0: 0.8, 1: 0.9, 3: 0.1}, {2}))
    study.optimize(opt, objective, n_trials=4, timeout=None)
    states = [t.state for t in opt.trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED]
    assert {n: s for n, (s, _) in rec.finished.items()} == dict(enumerate(states))
    assert math.isclose(opt.trials[0].value, 0.805)  # mean over the two folds
    # one step per epoch, across both stages and both folds: 2 x (4 + 4)
    assert sorted(opt.trials[0].intermediate_values) == list(range(16))
    # pruned right after the warm-up (the first cyclic phase of stage 1)
    assert opt.trials[3].last_step == cfg.sweep.cyclic_epochs
    assert (tmp_path / "s" / "trial_0" / "fold_1").is_dir()

    table = study.trials_table(opt)
    assert list(table.columns[:7]) == ["number", "state", "value", *study.PARAM_KEYS]
    assert list(table.state) == ["COMPLETE", "COMPLETE", "FAIL", "PRUNED"]
    s = study.summary(opt)
    assert (s["n_complete"], s["n_pruned"], s["n_failed"], s["best_trial"]) == (2, 1, 1, 1)

    plots, notes = study.save_plots(opt, tmp_path / "plots")
    assert set(plots) == {"optimization_history", "param_importances"}
    assert all(p.stat().st_size > 0 for p in plots.values())


def test_trial_runs_end_finished_killed_or_failed_under_one_parent(tmp_path, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    from fsd.entrypoints import sweep as edge

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    cfg = sweep_config(tmp_path, cyclic_epochs=2, plateau_low_epochs=0, plateau_high_epochs=0,
               storage="postgresql://me:s3cret@db/optuna")
    opt = optuna.create_study(direction="maximize", pruner=PruneFrom(2))
    train = scripted_train({0: 0.5, 2: 0.4}, failing={1})
    mlflow.set_experiment("t")
    with mlflow.start_run() as parent:
        tracker = edge.MlflowTrialTracker(cfg, "t-sweep", "feat123")
        study.optimize(opt, study.Objective(cfg, None, tmp_path / "s", tracker, train), 3, None)
        assert mlflow.active_run().info.run_id == parent.info.run_id  # trials left it open
    runs = MlflowClient().search_runs([parent.info.experiment_id],
                                      f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    got = {r.data.tags[tracking.TAG_SWEEP_TRIAL]: (r.info.status, r.data.tags[tracking.TAG_SWEEP_STATE])
           for r in runs}
    assert got == {"0": ("FINISHED", "COMPLETE"), "1": ("FAILED", "FAIL"),
                   "2": ("KILLED", "PRUNED")}
    failed = next(r for r in runs if r.data.tags[tracking.TAG_SWEEP_TRIAL] == "1")
    assert failed.data.tags[tracking.TAG_SWEEP_ERROR] == "RuntimeError: out of memory"
    assert all(r.data.params["sweep.storage"] == "postgresql://me@db/optuna" for r in runs)
    assert opt.trials[0].user_attrs[edge.RUN_ID_ATTR] in {r.info.run_id for r in runs}


class PruneFrom(optuna.pruners.BasePruner):
    """A real pruner that stops every trial from ``number`` on at its first report."""

    def __init__(self, number: int) -> None:
        self.number = number

    def prune(self, study_: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number >= self.number


def _tiny(tmp_path: Path) -> list[str]:
    return [
        "--config", str(REPO / "experiments" / "demo.yaml"),
        f"store.cache_dir={tmp_path}/cache", f"output_dir={tmp_path}/out",
        "data.synthetic_clips_per_class=4", "pca.n_components=8",
        "model.width=0.35", "model.dense1=32", "model.dense2=16",
        "train.batch_size=16", "train.val_lengths=[100]", "train.steps_per_epoch=0",
        "sweep.cyclic_epochs=1", "sweep.plateau_low_epochs=0", "sweep.plateau_high_epochs=0",
        "sweep.alpha1_min=0.2", "sweep.alpha1_max=1.0", "sweep.alpha2_min=0.2",
        "sweep.alpha2_max=1.0", "sweep.crop_min_low=30", "sweep.crop_min_high=60",
        "sweep.crop_max_low=80", "sweep.crop_max_high=120",
    ]


@pytest.mark.slow
def test_sweep_nests_trials_prunes_exports_and_continues(tmp_path, monkeypatch):
    """2 trials (one trained, one pruned at its first epoch), then a rerun adding a third.

    About 1.5 minutes on 2 busy cores; one fully trained trial is ~40 s of it.
    """
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from fsd.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)  # nothing may land in the checkout
    args = _tiny(tmp_path)
    assert main(["featurize", *args]) == 0

    monkeypatch.setattr(study, "make_pruner", lambda sweep: PruneFrom(1))
    assert main(["sweep", *args, "--n-trials", "2", "--timeout", ""]) == 0

    client = MlflowClient()
    exp = client.get_experiment_by_name("demo")
    (parent,) = client.search_runs([exp.experiment_id], "tags.`fsd.stage` = 'sweep'")
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[tracking.TAG_SWEEP_STUDY] == "demo-sweep"
    trials = client.search_runs([exp.experiment_id], "tags.`fsd.stage` = 'sweep_trial'")
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parent.info.run_id}
    by_number = {int(r.data.tags[tracking.TAG_SWEEP_TRIAL]): r for r in trials}
    states = {n: (r.info.status, r.data.tags[tracking.TAG_SWEEP_STATE]) for n, r in by_number.items()}
    assert states == {0: ("FINISHED", "COMPLETE"), 1: ("KILLED", "PRUNED")}
    assert "step 0" in by_number[1].data.tags[tracking.TAG_SWEEP_PRUNED]
    assert "val_map3" not in by_number[1].data.metrics
    assert [m.step for m in client.get_metric_history(by_number[1].info.run_id,
                                                      "stage1/val_map3")] == [0]
    done = by_number[0]
    assert 0 <= done.data.metrics["val_map3"] <= 1
    assert done.data.params["train.stage1.cyclic_epochs"] == "1"  # the short schedule
    assert 30 <= int(done.data.params["train.crop_min"]) < int(done.data.params["train.crop_max"])
    # one step axis across both stages: stage 2 continues after stage 1's epochs
    n1 = len(client.get_metric_history(done.info.run_id, "stage1/val_map3"))
    assert [m.step for m in client.get_metric_history(done.info.run_id, "stage2/val_map3")] == [n1]
    assert done.data.tags["mlflow.note.content"].startswith("**sweep trial 0** of study")
    study_dir = tmp_path / "out" / "demo" / "sweep" / "demo-sweep"
    assert (study_dir / "trial_0" / "fold_0" / "result.json").exists()
    assert not (study_dir / "trial_1" / "fold_0" / "checkpoint").exists()

    # the parent: trials table, plots (or a note why not), best params, best config
    arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"study", "plots", "best_config.yaml"} <= arts
    df = pd.read_csv(client.download_artifacts(parent.info.run_id, "study/trials.csv",
                                               str(tmp_path)))
    assert list(df.state) == ["COMPLETE", "PRUNED"]
    assert {"number", "value", *study.PARAM_KEYS} <= set(df.columns)
    plots = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"optimization_history.png", "notes.txt"} <= plots  # importances need 2 complete
    assert parent.data.metrics["best_val_map3"] == df.value[0]
    assert parent.data.tags[tracking.TAG_SWEEP_BEST_RUN] == done.info.run_id
    best = load_config(study_dir / "best.yaml")
    assert (best.train.crop_min, best.train.crop_max) == (df[study.CROP_MIN][0],
                                                           df[study.CROP_MAX][0])
    assert math.isclose(best.train.stage2.mixup_alpha, df[study.ALPHA2][0])
    demo = load_config(REPO / "experiments" / "demo.yaml")
    assert best.train.stage1.cyclic_epochs == demo.train.stage1.cyclic_epochs  # not the sweep's
    assert parent.data.params[f"best.{study.CROP_MIN}"] == str(best.train.crop_min)
    logged = client.download_artifacts(parent.info.run_id, "best_config.yaml", str(tmp_path / "a"))
    assert Path(logged).read_text() == (study_dir / "best.yaml").read_text()
    best.validate()

    # a rerun with the same study name continues the study (its trial is pruned too, to save
    # time; the best trial is still trial 0 of the first run)
    assert main(["sweep", *args, "--n-trials", "1"]) == 0
    url = study.storage_url(load_config(REPO / "experiments" / "demo.yaml", args[2:]))
    loaded = optuna.load_study(study_name="demo-sweep", storage=url)
    assert [t.number for t in loaded.trials] == [0, 1, 2]
    parents = client.search_runs([exp.experiment_id], "tags.`fsd.stage` = 'sweep'",
                                 order_by=["attributes.start_time DESC"])
    assert len(parents) == 2
    kids = client.search_runs([exp.experiment_id],
                              f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    assert [k.data.tags[tracking.TAG_SWEEP_TRIAL] for k in kids] == ["2"]
    newest = parents[0].data
    assert (newest.params["study.n_trials"], newest.params["study.n_new_trials"]) == ("3", "1")
    assert "n_trials" not in newest.metrics and "best: [trial 0]" in newest.tags["mlflow.note.content"]
    assert newest.tags[tracking.TAG_SWEEP_BEST_TRIAL] == "0"
