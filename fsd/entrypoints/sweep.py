"""Search mixup alpha (per stage) and the crop limits with Optuna; every trial a nested run.

One parent run per invocation holds the study: its trials table (trials.csv), Optuna's
optimization-history and param-importance plots, the best params, and the best trial written
out as a ready-to-run experiment config (artifact best_config.yaml, also written to
<output_dir>/<name>/sweep/<study>/best.yaml). Under it, one nested run per trial logs the
trial's config, every epoch's metrics and its validation MAP@3, tagged with the trial number
and its state; a pruned trial ends KILLED, a failed one FAILED, and the sweep goes on.

Trials train ``sweep.folds`` with the sweep's short schedules (sweep.cyclic_epochs,
plateau_low_epochs, plateau_high_epochs); the objective is their mean validation MAP@3. The
study lives in sweep.storage (default: a sqlite file under the experiment's outputs; any
SQLAlchemy URL, e.g. PostgreSQL for several workers): rerunning with the same study name
continues it, adding --n-trials trials.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fsd import tracking
from fsd.config import Config, ConfigError
from fsd.entrypoints.flags import optional_float, optional_int
from fsd.train.folddir import FoldDir

if TYPE_CHECKING:  # optuna and mlflow load with the command, not with `fsd --help`
    import optuna

HELP = "Optuna study over mixup alpha and crop limits, every trial a nested MLflow run"
log = logging.getLogger(__name__)

STAGE_TRIAL = "sweep_trial"

BEST_CONFIG_ARTIFACT = "best_config.yaml"
RUN_ID_ATTR = "mlflow_run_id"  # trial user attr: the trial's nested run



def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-trials", type=optional_int, default=None,
                   help="trials to run now (default: sweep.n_trials); a rerun with the same study "
                        "name adds them to the study")
    p.add_argument("--timeout", type=optional_float, default=None,
                   help="start no trial after this many seconds (default: sweep.timeout; 0: none)")
    p.add_argument("--features-run", default="",
                   help="featurize run id to take features from (default: newest with the same key)")


def __getattr__(name: str) -> Any:
    """``MlflowTrialTracker`` subclasses the study's hook class (optuna): built on first use,
    so importing this module for ``fsd --help`` loads neither optuna nor mlflow."""
    if name == "MlflowTrialTracker":
        cls = _tracker_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run(cfg: Config, args: argparse.Namespace) -> int:
    from fsd.sweep import study

    if args.n_trials is not None:
        cfg.sweep.n_trials = args.n_trials
    if args.timeout is not None:
        cfg.sweep.timeout = args.timeout
    cfg.validate()
    study.check_space(cfg)
    if not cfg.sweep.n_trials and not cfg.sweep.timeout:
        raise ConfigError("sweep.n_trials and sweep.timeout are both 0: the sweep would never end; "
                          "give --n-trials or --timeout")
    url = study.storage_url(cfg)
    if study.redact(url) != url:
        log.warning("sweep.storage carries a password; it is left out of every log and config "
                    "(let the driver find it: PGPASSWORD, ~/.pgpass, MYSQL_PWD)")
    store, features_run = tracking.resolve_store(cfg, getattr(args, "features_run", "") or "")
    opt = study.open_study(cfg, study.make_storage(url))
    root = study.study_dir(cfg)
    n_before = len(opt.trials)
    log.info("study %r in %s: %d earlier trials; running up to %s more (timeout %s s)",
             opt.study_name, study.redact(url), n_before, cfg.sweep.n_trials or "unlimited",
             cfg.sweep.timeout or "none")
    shown = _without_password(cfg)
    tags = {tracking.TAG_SWEEP_STUDY: opt.study_name, tracking.TAG_SWEEP_STORAGE: study.redact(url),
            tracking.TAG_FEATURES_RUN: features_run,
            tracking.TAG_FEATURE_KEY: tracking.feature_key(cfg)}
    with tracking.stage_run(shown, "sweep", tags=tags,
                            run_name=cfg.tracking.run_name or f"sweep-{opt.study_name}") as parent:
        tracker = _tracker_class()(shown, opt.study_name, features_run)
        objective = study.Objective(cfg, store, root, tracker=tracker)
        study.optimize(opt, objective, cfg.sweep.n_trials, cfg.sweep.timeout)
        return log_study(opt, shown, root, parent.info.run_id, n_before)


def _without_password(cfg: Config) -> Config:
    from fsd.sweep import study

    if not cfg.sweep.storage:
        return cfg
    return study.apply_params(cfg, {"sweep.storage": study.redact(cfg.sweep.storage)})


def _tracker_class() -> type:
    """The trial tracker class (see the module's ``__getattr__``)."""
    import mlflow
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    from fsd.sweep import study

    status_of = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED",
                 TrialState.FAIL: "FAILED"}

    class MlflowTrialTracker(study.TrialTracker):
        """Each trial as a run nested under the active sweep run."""

        def __init__(self, cfg: Config, study_name: str, features_run: str) -> None:
            self.cfg = cfg
            self.study_name = study_name
            self.features_run = features_run
            self.multi_fold = len(cfg.sweep.folds) > 1
            self.run_id = ""

        def start(self, trial: optuna.Trial, params: dict[str, Any], cfg: Config) -> None:
            tags = {tracking.TAG_STAGE: STAGE_TRIAL, tracking.TAG_CONFIG: cfg.name,
                    tracking.TAG_SWEEP_STUDY: self.study_name, tracking.TAG_SWEEP_TRIAL: str(trial.number),
                    tracking.TAG_SWEEP_STATE: TrialState.RUNNING.name,
                    tracking.TAG_SWEEP_WORKDIR: str(trial.user_attrs.get("workdir", "")),
                    tracking.TAG_FEATURES_RUN: self.features_run}
            # Not a context manager: a pruned trial must end KILLED, and leaving `with` on an
            # exception would mark it FAILED.
            run = mlflow.start_run(run_name=f"trial-{trial.number}", nested=True, tags=tags)
            self.run_id = run.info.run_id
            try:
                trial.set_user_attr(RUN_ID_ATTR, self.run_id)
                tracking.log_config(_without_password(cfg))
                mlflow.log_dict({k: v for k, v in params.items()}, "trial_params.json")
            except Exception:
                # Left active, this run would become the parent of every later trial.
                mlflow.end_run("FAILED")
                raise

        def on_epoch(self, fold: int) -> study.OnEpoch:
            return tracking.epoch_logger(f"fold_{fold}/" if self.multi_fold else "")

        def fold_done(self, fold: int, value: float, workdir: Path) -> None:
            if self.multi_fold:
                mlflow.log_metric(f"fold_{fold}/{study.OBJECTIVE}", value)
            # The model stays in the workdir: a sweep keeps only what compares trials.
            files = FoldDir(workdir)
            tracking.log_files([files.history, files.result], f"fold_{fold}")
            if files.plots.is_dir():
                mlflow.log_artifacts(str(files.plots), f"fold_{fold}/plots")

        def finish(self, trial: optuna.Trial, state: TrialState, value: float | None,
                   error: BaseException | None) -> None:
            if not self.run_id:
                return
            tags = {tracking.TAG_SWEEP_STATE: state.name}
            status = status_of[state]
            if state == TrialState.PRUNED:
                tags[tracking.TAG_SWEEP_PRUNED] = str(error)[:1000]
            elif error is not None:
                tags[tracking.TAG_SWEEP_ERROR] = f"{type(error).__name__}: {error}"[:1000]
                if not isinstance(error, Exception):  # Ctrl-C, SystemExit: stopped, not broken
                    status = "KILLED"
            client = MlflowClient()
            try:
                for k, v in tags.items():
                    client.set_tag(self.run_id, k, v)
                if value is not None:
                    client.log_metric(self.run_id, study.OBJECTIVE, value)
                tracking.describe(tracking.trial_description(
                    self.cfg, self.study_name, trial.number, trial.params, value,
                    state.name.lower()), run_id=self.run_id)
            finally:
                active = mlflow.active_run()
                if active is not None and active.info.run_id == self.run_id:
                    mlflow.end_run(status)
                else:
                    client.set_terminated(self.run_id, status)
                self.run_id = ""

    return MlflowTrialTracker


def log_study(opt: optuna.Study, cfg: Config, root: Path, run_id: str, n_before: int) -> int:
    """Log the study's summary into the active (parent) run; 1 when no trial ever completed."""
    import mlflow
    from optuna.trial import TrialState

    from fsd.sweep import export, study

    summary = study.summary(opt)
    new = opt.trials[n_before:]
    n_new_failed = sum(t.state == TrialState.FAIL for t in new)
    # counts of trials: params of this run (one sweep invocation), not charts
    tracking.log_new_params({
        "study.n_trials": summary["n_trials"], "study.n_complete": summary["n_complete"],
        "study.n_pruned": summary["n_pruned"], "study.n_failed": summary["n_failed"],
        "study.n_new_trials": len(new), "study.n_new_failed": n_new_failed,
    })
    table = study.trials_table(opt)
    mlflow.log_text(table.to_csv(index=False), "study/trials.csv")
    mlflow.log_dict(summary, "study/summary.json")
    plots, notes = study.save_plots(opt, root / "plots")
    tracking.log_files(plots, "plots")
    for note in notes:
        log.info("sweep plots: %s", note)
    if notes:
        mlflow.log_text("\n".join(notes) + "\n", "plots/notes.txt")

    best = study.best_trial(opt)
    if best is None:
        log.error("study %r has no completed trial (%d pruned, %d failed): no best config",
                  opt.study_name, summary["n_pruned"], summary["n_failed"])
        return 1
    mlflow.log_metric(f"best_{study.OBJECTIVE}", best.value)
    tracking.describe(tracking.sweep_description(
        cfg, opt.study_name, summary, best.user_attrs.get(RUN_ID_ATTR, ""), best.number,
        best.value, best.params, BEST_CONFIG_ARTIFACT))
    mlflow.log_params({f"best.{k}": v for k, v in best.params.items()})
    mlflow.set_tags({tracking.TAG_SWEEP_BEST_TRIAL: str(best.number),
                     tracking.TAG_SWEEP_BEST_RUN: best.user_attrs.get(RUN_ID_ATTR, "")})
    path = root / "best.yaml"
    header = (f"Best trial {best.number} of Optuna study {opt.study_name!r}: {study.OBJECTIVE} "
              f"{best.value:.4f} (trained with the sweep's short schedules; the schedules below "
              f"are the full ones).\nFrom MLflow sweep run {run_id}.\n"
              f"Train it: fsd main --config {path}")
    export.write_best_config(cfg, dict(best.params), path, header=header)
    mlflow.log_text(path.read_text(), BEST_CONFIG_ARTIFACT)
    log.info("best trial %d: %s %.4f with %s; config written to %s", best.number,
             study.OBJECTIVE, best.value, best.params, path)
    if new and n_new_failed == len(new):
        log.error("all %d trials of this run failed; see the %s tag of their runs",
                  len(new), tracking.TAG_SWEEP_ERROR)
        return 1
    return 0
