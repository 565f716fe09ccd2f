"""Train one fold of the two-stage recipe on the features of a featurize run.

Every epoch's loss, val_loss, val_map3, val_accuracy and lr is logged (``stage1/...``,
``stage2/...``) at one step per epoch counted across both stages; epochs done before this run
(a finished work folder, a checkpoint written under another run or tracking store) are
replayed from history.csv at their own steps, and the description says so. The result's
measurements are metrics, its counts params (``fold.*``). The run is tagged with its fold,
its featurize run and its training key (the same for every fold of one recipe, so the
ensemble step can find the set), and logs the best model (.keras), the fold's scaler+PCA,
history, plots and out-of-fold predictions.

Resumable: rerunning the same command continues from the fold's last checkpoint (started with
``fsd train-fold``, also in the same MLflow run; under ``mlflow run`` the launcher opens a new one).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from fsd import tracking
from fsd.config import Config, ConfigError
from fsd.entrypoints.featurize import resolve_store
from fsd.entrypoints.flags import optional_int

HELP = "train one fold (two stages, MobileNetV2 + PCA), every epoch logged to MLflow"
log = logging.getLogger(__name__)

FOLD_ARTIFACT = "fold"
RUN_ID_FILE = "mlflow_run_id"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fold", type=optional_int, default=None,
                   help="the held-out fold (overrides train.fold)")
    p.add_argument("--features-run", default="",
                   help="featurize run id to take features from (default: newest with the same key)")
    p.add_argument("--parent-run", default="",
                   help="show the run as a child of this run (fsd main's fold workers set it)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (one log line per epoch), e.g. beside other workers")


def fold_workdir(cfg: Config, fold: int, store_key: str) -> Path:
    """Outputs of one fold live under the experiment, keyed by the recipe and the features."""
    return cfg.experiment_dir / "train" / f"{tracking.train_key(cfg)}-{store_key[:8]}" / f"fold_{fold}"


def run(cfg: Config, args: argparse.Namespace) -> int:
    if args.fold is not None:
        cfg.train.fold = args.fold
        cfg.validate()
    store, features_run = resolve_store(cfg, args.features_run or "")
    train_fold_logged(cfg, store, features_run, parent_run=args.parent_run,
                      progress=not args.no_progress)
    return 0


def train_fold_logged(cfg: Config, store, features_run: str, *, nested: bool = False,
                      parent_run: str = "", progress: bool = True):
    """Train ``cfg.train.fold`` inside an MLflow run (resuming the fold's unfinished run).

    ``parent_run`` makes the run a child of that run although it is started by another
    process (the tag MLflow's ``nested=True`` would set)."""
    from fsd.train.fit import train_fold

    fold = cfg.train.fold
    workdir = fold_workdir(cfg, fold, store.key)
    workdir.mkdir(parents=True, exist_ok=True)
    tags = {tracking.TAG_FOLD: str(fold), tracking.TAG_FEATURES_RUN: features_run,
            tracking.TAG_FEATURE_KEY: tracking.feature_key(cfg), tracking.TAG_STORE_KEY: store.key,
            tracking.TAG_TRAIN_KEY: tracking.train_key(cfg)}
    if parent_run:
        tags["mlflow.parentRunId"] = parent_run
    # Under `mlflow run` the launcher already opened this step's run; use that one.
    earlier = _run_id_in(workdir)  # the run that wrote the workdir's checkpoint (any store)
    previous = _unfinished_run(workdir)
    launched = os.environ.get("MLFLOW_RUN_ID", "")
    resume_id = "" if launched else previous
    if previous and previous != launched:
        _reap(previous)  # its process is gone: KILLED, not RUNNING forever
    if not resume_id:
        tracking.set_experiment(cfg)
    if resume_id:
        log.info("resuming fold %d in MLflow run %s", fold, resume_id)
        # The interrupted run may live in another experiment (e.g. `mlflow run`'s default).
        mlflow.set_experiment(experiment_id=MlflowClient().get_run(resume_id).info.experiment_id)
        old_pid = MlflowClient().get_run(resume_id).data.tags.get(tracking.TAG_PID, "")
        ctx = mlflow.start_run(run_id=resume_id, nested=nested,
                               log_system_metrics=tracking.system_metrics("train_fold"))
    else:
        if previous:
            # a new run (under `mlflow run`) that continues the interrupted one's checkpoint
            tags = {**tags, tracking.TAG_CONTINUES: previous}
            log.info("fold %d continues the checkpoint of MLflow run %s", fold, previous)
        ctx = tracking.stage_run(cfg, "train_fold", nested=nested, tags=tags,
                                 run_name=f"fold-{fold}")
    with ctx as active:
        if resume_id:
            mlflow.set_tags({**tracking.process_tags(), "fsd.resumed_from_pid": old_pid})
        run_id = active.info.run_id
        (workdir / RUN_ID_FILE).write_text(run_id)
        history = workdir / "history.csv"
        # Epochs of this fold done before this run (a finished workdir, or a checkpoint of
        # another run or tracking store) are replayed first, at their own steps, so the run
        # carries the whole history of the model it holds.
        replayed = tracking.replay_history(run_id, history)
        logger = tracking.epoch_logger(history_path=history)
        trained = []

        def on_epoch(stage: str, epoch: int, metrics: dict) -> None:
            trained.append((stage, epoch))
            logger(stage, epoch, metrics)

        result = train_fold(cfg, store, fold, workdir, on_epoch=on_epoch, progress=progress)
        replayed += tracking.replay_history(run_id, history)  # what the first pass could not see
        summary = log_fold_outputs(workdir)
        note = _reuse_note(workdir, earlier if earlier != run_id else "", replayed, len(trained))
        if replayed:
            mlflow.set_tags({"fsd.replayed_epochs": str(replayed),
                             "fsd.reused_from": earlier or "unknown"})
        tracking.describe(tracking.fold_description(cfg, fold, summary, features_run, note))
    return result, active.info.run_id


def _reuse_note(workdir: Path, earlier: str, replayed: int, trained: int) -> str:
    """What the description says about work this run did not do itself ('' when none)."""
    if not replayed:
        return ""
    by = f" (written under run `{earlier}`)" if earlier else ""
    if not trained:
        return (f"**Reused** the fold's finished work in `{workdir}`{by}: nothing was trained "
                f"in this run; its {replayed} epochs are replayed from `history.csv` at their "
                "original steps.")
    return (f"**Resumed** from the checkpoint in `{workdir}`{by}: its first {replayed} epochs "
            f"are replayed from `history.csv` at their original steps, the other {trained} "
            "were trained in this run.")


def _run_id_in(workdir: Path) -> str:
    path = workdir / RUN_ID_FILE
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def log_fold_outputs(workdir: Path) -> dict:
    """Log a finished fold's result.json (measurements as metrics, counts as params: see
    tracking.fold_summary), its files and plots; returns result.json's content."""
    summary = json.loads((workdir / "result.json").read_text())
    metrics, params = tracking.fold_summary(summary)
    mlflow.log_metrics(metrics)
    tracking.log_new_params(params)
    if summary.get("selected_stage"):
        mlflow.set_tag("fsd.selected_stage", summary["selected_stage"])
    for name in ("model.keras", "projector.joblib", "history.csv", "oof.csv", "result.json"):
        if (workdir / name).exists():
            mlflow.log_artifact(str(workdir / name), FOLD_ARTIFACT)
    if (workdir / "plots").is_dir():
        mlflow.log_artifacts(str(workdir / "plots"), "plots")
    return summary


def _unfinished_run(workdir: Path) -> str:
    """The MLflow run an interrupted training of this fold left open, if any."""
    path = workdir / RUN_ID_FILE
    if not path.exists():
        return ""
    run_id = path.read_text().strip()
    try:
        status = MlflowClient().get_run(run_id).info.status
    except Exception:  # the run may live in another tracking store; start a fresh one
        return ""
    return run_id if status in ("RUNNING", "FAILED", "KILLED") else ""


def _reap(run_id: str) -> None:
    """Mark the interrupted run KILLED when it is RUNNING and its process is gone."""
    try:
        run = MlflowClient().get_run(run_id)
    except Exception:
        return
    if tracking.run_process_gone(run):
        tracking.reap_dead_runs(run.info.experiment_id)


def fold_runs(cfg: Config, run_ids: list[str] | None = None) -> dict[int, mlflow.entities.Run]:
    """The finished fold runs of this training recipe, one per fold (the newest of each).

    Explicit ``run_ids`` are checked to be fold runs of one training; an incomplete or mixed
    set is refused with a message saying what is missing or different.
    """
    if run_ids:
        runs = [mlflow.get_run(r) for r in run_ids]
        keys = {(r.data.tags.get(tracking.TAG_TRAIN_KEY), r.data.tags.get(tracking.TAG_STORE_KEY))
                for r in runs}
        if len(keys) != 1:
            raise ConfigError(
                f"fold runs come from different trainings or features (train/store keys "
                f"{sorted(map(str, keys))})")
        not_done = [r.info.run_id for r in runs if r.info.status != "FINISHED"]
        if not_done:
            raise ConfigError(f"fold runs not finished: {not_done}")
        by_fold: dict[int, mlflow.entities.Run] = {}
        for r in runs:
            fold = int(r.data.tags[tracking.TAG_FOLD])
            if fold in by_fold:
                raise ConfigError(f"runs {by_fold[fold].info.run_id} and {r.info.run_id} both "
                                  f"trained fold {fold}; name one run per fold")
            by_fold[fold] = r
    else:
        by_fold = tracking.finished_folds(cfg)
    expected = set(range(cfg.folds.n_folds))
    missing = sorted(expected - set(by_fold))
    if missing:
        raise ConfigError(
            f"incomplete set of fold runs for training key {tracking.train_key(cfg)}: folds "
            f"{missing} are missing (have {sorted(by_fold)}); train them with "
            "`fsd train-fold --fold K` using the same config"
        )
    return dict(sorted(by_fold.items()))
