"""Train one fold of the two-stage recipe on the features of a featurize run.

Every epoch's loss, val_loss, val_map3, val_accuracy and lr is logged (``stage1/...``,
``stage2/...``) at one step per epoch counted across both stages; epochs done before this run
(a finished work folder, a checkpoint written under another run or tracking store) are
replayed from history.csv at their own steps, and the description says so. The result's
measurements are metrics, its counts params (``fold.*``). The run is tagged with its fold,
its featurize run and its training key (the same for every fold of one recipe, so the
ensemble step can find the set), and logs the best model (.keras), the fold's scaler+PCA,
history, plots and out-of-fold predictions. The kept network is also the run's LoggedModel
(Keras flavor, ``cnn-fold-<k>``): described, with the params that made it, and its validation
metrics (``val_map3``, ``val_accuracy``, ``val_loss``) linked to it and to the dataset they were
measured on (the fold's clips); the run logs the clip table as its training input.

Resumable: rerunning the same command continues from the fold's last checkpoint (started with
``fsd train-fold``, also in the same MLflow run; under ``mlflow run`` the launcher opens a new one).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from fsd import tracking
from fsd.config import Config
from fsd.entrypoints.flags import optional_int
from fsd.train.experimentdir import ExperimentDir
from fsd.train.folddir import FoldDir

HELP = "train one fold (two stages, MobileNetV2 + PCA), every epoch logged to MLflow"
log = logging.getLogger(__name__)

RUN_ID_FILE = FoldDir.run_id_file  # the name: a class attribute of FoldDir is its file name


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
    return ExperimentDir.of(cfg).fold(tracking.train_key(cfg), store_key, fold)


def run(cfg: Config, args: argparse.Namespace) -> int:
    if args.fold is not None:
        cfg.train.fold = args.fold
        cfg.validate()
    store, features_run = tracking.resolve_store(cfg, args.features_run or "")
    train_fold_logged(cfg, store, features_run, parent_run=args.parent_run,
                      progress=not args.no_progress)
    return 0


def train_fold_logged(cfg: Config, store, features_run: str, *, nested: bool = False,
                      parent_run: str = "", progress: bool = True):
    """Train ``cfg.train.fold`` inside an MLflow run (resuming the fold's unfinished run).

    ``parent_run`` makes the run a child of that run although it is started by another
    process (the tag MLflow's ``nested=True`` would set)."""
    import mlflow

    from fsd.tracking.runs import reap_if_gone, resume_run, unfinished_run
    from fsd.train.fit import train_fold

    fold = cfg.train.fold
    workdir = fold_workdir(cfg, fold, store.key)
    workdir.mkdir(parents=True, exist_ok=True)
    files = FoldDir(workdir)
    tags = {tracking.TAG_FOLD: str(fold), tracking.TAG_FEATURES_RUN: features_run,
            tracking.TAG_FEATURE_KEY: tracking.feature_key(cfg), tracking.TAG_STORE_KEY: store.key,
            tracking.TAG_TRAIN_KEY: tracking.train_key(cfg)}
    if parent_run:
        tags[tracking.TAG_PARENT] = parent_run
    earlier = files.run_id()  # the run that wrote the workdir's checkpoint (any store)
    previous = unfinished_run(earlier)
    # Under `mlflow run` the launcher already opened this step's run; use that one.
    launched = os.environ.get("MLFLOW_RUN_ID", "")
    resume_id = "" if launched else previous
    if previous and previous != launched:
        reap_if_gone(previous)  # its process is gone: KILLED, not RUNNING forever
    if resume_id:
        log.info("resuming fold %d in MLflow run %s", fold, resume_id)
        ctx = resume_run(resume_id, nested=nested)
    else:
        tracking.set_experiment(cfg)
        if previous:
            # a new run (under `mlflow run`) that continues the interrupted one's checkpoint
            tags = {**tags, tracking.TAG_CONTINUES: previous}
            log.info("fold %d continues the checkpoint of MLflow run %s", fold, previous)
        ctx = tracking.stage_run(cfg, "train_fold", nested=nested, tags=tags,
                                 run_name=f"fold-{fold}")
    with ctx as active:
        run_id = active.info.run_id
        files.run_id_file.write_text(run_id)
        # Epochs of this fold done before this run (a finished workdir, or a checkpoint of
        # another run or tracking store) are replayed first, at their own steps, so the run
        # carries the whole history of the model it holds.
        replayed = tracking.replay_history(run_id, files.history)
        logger = tracking.epoch_logger(history_path=files.history)
        trained = []

        def on_epoch(stage: str, epoch: int, metrics: dict) -> None:
            trained.append((stage, epoch))
            logger(stage, epoch, metrics)

        result = train_fold(cfg, store, fold, workdir, on_epoch=on_epoch, progress=progress)
        replayed += tracking.replay_history(run_id, files.history)  # what the first pass could not see
        summary = log_fold_outputs(workdir, cfg, store, fold)
        note = _reuse_note(workdir, earlier if earlier != run_id else "", replayed, len(trained))
        if replayed:
            mlflow.set_tags({tracking.TAG_REPLAYED_EPOCHS: str(replayed),
                             tracking.TAG_REUSED_FROM: earlier or "unknown"})
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


# the kept model's validation figures: the run's and its LoggedModel's, on the fold's clips
MODEL_METRICS = ("val_map3", "val_accuracy", "val_loss")


def log_fold_outputs(workdir: Path, cfg: Config | None = None, store=None,
                     fold: int | None = None) -> dict:
    """Log a finished fold's result.json (measurements as metrics, counts as params: see
    tracking.fold_summary), its files and plots, and its network as the run's LoggedModel with
    the validation metrics linked to it and to the fold's clips (with ``cfg`` and a store
    that has an index); returns result.json's content."""
    import mlflow

    from fsd.tracking.artifacts import FOLD_ARTIFACT

    files = FoldDir(workdir)
    summary = files.read_result()
    metrics, params = tracking.fold_summary(summary)
    val = {k: metrics.pop(k) for k in MODEL_METRICS if k in metrics}
    tracking.log_new_params(params)
    if summary.get("selected_stage"):
        mlflow.set_tag(tracking.TAG_SELECTED_STAGE, summary["selected_stage"])
    index = getattr(store, "index", None)
    model_id = ""
    if cfg is not None and index is not None and fold is not None:
        model_id = _log_fold_model(cfg, store, fold, files, summary, val)
    if not model_id:
        tracking.log_run_metrics(val)
    tracking.log_run_metrics(metrics)
    tracking.log_files(files.logged(), FOLD_ARTIFACT)
    if files.plots.is_dir():
        mlflow.log_artifacts(str(files.plots), "plots")
    return summary


def _log_fold_model(cfg: Config, store, fold: int, files: FoldDir, summary: dict,
                    val: dict[str, float]) -> str:
    """The fold's network as a Keras LoggedModel of the run, its validation metrics linked
    to it and to the fold's clips; returns its model id ('' when there is no network)."""
    from fsd.tracking import datasets, models

    feature_key = tracking.feature_key(cfg)
    datasets.log_dataset(datasets.store_dataset(cfg, store.index, feature_key), datasets.TRAINING)
    held_out = datasets.store_dataset(cfg, store.index, feature_key, fold=fold)
    datasets.log_dataset(held_out, datasets.VALIDATION)
    if not files.model.is_file():
        return ""
    kept = summary.get("selected_stage", "stage2")
    params = {"fold": fold, "model.backbone": cfg.model.backbone, "model.width": cfg.model.width,
              "selected_stage": kept, "epochs": summary.get("epochs", ""),
              "n_train": summary.get("n_train", ""), "n_val": summary.get("n_val", ""),
              "crop_min": summary.get("crop_min", ""), "crop_max": summary.get("crop_max", ""),
              "train_key": tracking.train_key(cfg)}
    figures = ", ".join(f"{k} {v:.3f}" for k, v in val.items())
    description = (
        f"**CNN of fold {fold}** (`{cfg.name}`, {cfg.model.backbone}, kept: {kept}): trained "
        f"on the other folds' {summary.get('n_train', '?')} clips, validated on the "
        f"{summary.get('n_val', '?')} clips of fold {fold} (dataset `{held_out.name}`): "
        f"{figures} (fixed lengths, centre crops, no TTA). Input: log-mel "
        f"{'and the PCA of the summary features ' if kept == 'stage2' else ''}as the fold's "
        "`fold/` artifacts scale them.")
    # the model's step: the run's epochs (the network as it stands after them)
    step = _epochs_logged(files)
    model = models.log_keras_model(files.model, name=f"cnn-fold-{fold}", description=description,
                                   params=params, step=step)
    models.log_model_metrics(val, model.model_id, held_out)
    return model.model_id


def _epochs_logged(files: FoldDir) -> int:
    try:
        import pandas as pd

        return int(len(pd.read_csv(files.history)))
    except (OSError, ValueError):
        return 0
