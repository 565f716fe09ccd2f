"""Train one fold: stage 1 (log-mel) then stage 2 (log-mel + PCA), each A -> B -> C.

The loop is plain Keras 3 (``train_on_batch``/``predict_on_batch``), so any backend runs it.
After every epoch the fold's state is checkpointed under ``workdir/checkpoint/`` (weights,
optimizer variables, best weights, schedule and plateau state, history); rerunning
``train_fold`` with the same ``workdir`` continues after the last finished epoch. Data
augmentation needs no saved RNG state: batch ``i`` of epoch ``e`` is a function of
``(train.seed, fold, stage, e, i)``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
from tqdm import tqdm

from fsd import progress as progress_bars
from fsd.config import Config, StageConfig
from fsd.evaluation.metrics import categorical_crossentropy, map_at_k, per_class_ap
from fsd.model.networks import build_network, set_input_statistics, transfer_mel_branch
from fsd.model.tta import predict_ensemble
from fsd.train.batches import FeatureSource, TrainBatches, prefetch
from fsd.train.checkpoint import (
    STAGES,
    Checkpoint,
    TrainError,
    TrainState,
    atomic_write_text,
    check_resume,
    save_model,
)
from fsd.train.fold_data import FoldData, check_store, model_key, prepare
from fsd.train.folddir import FoldDir
from fsd.train.schedule import Phase, PlateauState, plateau_for, stage_phases, triangular_lr

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ["stage", "phase", "epoch", "loss", "val_loss", "val_map3", "val_accuracy", "lr"]
OnEpoch = Callable[[str, int, dict[str, float]], None]
__all__ = ["STAGES", "FoldResult", "TrainError", "run_epoch", "train_fold"]


@dataclass
class FoldResult:
    """What :func:`train_fold` wrote, plus the history and the summary metrics."""

    fold: int
    workdir: Path
    model_path: Path
    projector_path: Path
    history_path: Path
    oof_path: Path
    result_path: Path
    plots: dict[str, Path]
    history: pd.DataFrame
    metrics: dict[str, Any]


# --------------------------------------------------------------------------- training


def _reset_optimizer(model: keras.Model, lr: float) -> None:
    """A fresh Adam (zero moments, step 0) without recompiling, which would retrace."""
    opt = model.optimizer
    if not opt.built:
        opt.build(model.trainable_variables)
    for v in opt.variables:
        v.assign(np.zeros(v.shape, dtype=keras.backend.standardize_dtype(v.dtype)))
    opt.learning_rate = lr


def compile_network(model: keras.Model, lr: float, run_eagerly: bool = False) -> None:
    """Adam at ``lr`` on categorical cross-entropy (soft targets too), its variables built."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr),
                  loss="categorical_crossentropy", run_eagerly=run_eagerly)
    model.optimizer.build(model.trainable_variables)


def run_epoch(model: keras.Model, ds: TrainBatches, epoch: int, phase: Phase,
              phase_epoch: int, lr: float, bar: tqdm | None = None) -> tuple[list[float], float]:
    """One epoch of ``ds`` (batches built ahead on a thread) through ``train_on_batch``.

    In a cyclic phase the LR follows :func:`triangular_lr` per step (step size = one epoch,
    counted from the phase start). Stops at the first non-finite loss. Returns the batch
    losses and the last LR used.
    """
    losses: list[float] = []
    for step, batch in enumerate(prefetch(ds, epoch)):
        if phase.cyclic:
            lr = triangular_lr(phase_epoch * len(ds) + step, len(ds), phase.lr, phase.lr_max)
            model.optimizer.learning_rate = lr
        logs = model.train_on_batch(batch.inputs, batch.y, sample_weight=batch.w,
                                    return_dict=True)
        losses.append(float(logs["loss"]))
        if not math.isfinite(losses[-1]):
            break
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{lr:.2g}")
    return losses, lr


class _FoldTrainer:
    """Trains one fold's stages in order, checkpointing :class:`TrainState` after each epoch."""

    def __init__(self, cfg: Config, store: FeatureSource, fold: int, workdir: Path,
                 data: FoldData, state: TrainState, on_epoch: OnEpoch | None, progress: bool,
                 run_eagerly: bool = False) -> None:
        self.cfg, self.store, self.fold = cfg, store, fold
        self.files = FoldDir(workdir)
        self.run_eagerly = run_eagerly
        self.data, self.state, self.on_epoch, self.progress = data, state, on_epoch, progress
        self.ckpt = Checkpoint(self.files.checkpoint)
        self.shapes: set[tuple[int, ...]] = {tuple(s) for s in state.shapes}

    # ---- pieces
    def _build(self, stage: str) -> keras.Model:
        # Seed per stage so a resumed run builds the same fresh head as an uninterrupted one.
        keras.utils.set_random_seed(self.state.init_seed(stage))
        pca_dim = self.data.pca_train.shape[1] if stage == "stage2" else None
        return build_network(self.cfg.model, len(self.data.labels), self.data.n_mels, pca_dim)

    def _init_input_statistics(self, model: keras.Model, ds: TrainBatches, stage: str) -> None:
        """Start the input BNs at the statistics of the stage's own first batches (crops,
        zero padding, augmentation and mixup included: what batch normalisation sees)."""
        batches = [ds.batch(i, 0) for i in range(min(8, len(ds)))]
        if stage == "stage1":
            x = np.concatenate([b.x.ravel() for b in batches])
            set_input_statistics(model, logmel=(x.mean(), x.var()))
        else:  # stage 2's mel_bn comes settled from stage 1
            pca = np.concatenate([b.pca for b in batches])
            set_input_statistics(model, pca=(pca.mean(axis=0), pca.var(axis=0)))

    def _batches(self, stage: str, st: StageConfig) -> TrainBatches:
        return TrainBatches(
            self.store, self.data.train_rows, self.cfg.train, self.data.crop, st.mixup_alpha,
            pca=self.data.pca_train if stage == "stage2" else None, seed=self.state.rng["seed"],
            stream=self.state.data_stream(stage),
            steps_per_epoch=self.cfg.train.steps_per_epoch, n_classes=len(self.data.labels))

    def validate(self, model: keras.Model, stage: str) -> tuple[float, float, float, np.ndarray]:
        """val_loss, val_map3, val_accuracy and the probabilities on the held-out fold."""
        pca = self.data.pca_val if stage == "stage2" else None
        probs = predict_ensemble([model], self.data.val_clips, [pca], self.data.val_lengths,
                                 crops=1, batch_size=self.cfg.train.batch_size).probs()
        return (categorical_crossentropy(self.data.val_y, probs),
                map_at_k(self.data.val_y, probs, 3),
                map_at_k(self.data.val_y, probs, 1), probs)  # MAP@1 is top-1 accuracy

    def _train_epoch(self, model: keras.Model, ds: TrainBatches, phase: Phase, stage: str,
                     lr: float) -> tuple[float, float]:
        st = self.state
        # redrawn in place on a terminal; elsewhere the per-epoch log line is the progress
        bar = progress_bars.bar(total=len(ds), enabled=self.progress, leave=False, unit="batch",
                                desc=f"fold {self.fold} {stage} {phase.name} epoch {st.stage_epoch}")
        t0 = time.perf_counter()
        try:
            losses, lr = run_epoch(model, ds, st.stage_epoch, phase, st.phase_epoch, lr, bar)
        finally:
            bar.close()
        if not all(math.isfinite(v) for v in losses):
            raise TrainError(f"training loss became {losses[-1]} in {stage} phase {phase.name} "
                             f"epoch {st.stage_epoch} (learning rate {lr:g})")
        st.train_seconds += time.perf_counter() - t0
        st.train_samples += len(ds) * ds.batch_size
        self.shapes |= ds.shapes
        st.shapes = sorted(list(s) for s in self.shapes)
        return float(np.mean(losses)), lr

    # ---- one stage
    def run_stage(self, stage: str) -> None:
        """Train ``stage`` phase by phase from where the state says, then save its network."""
        st_cfg: StageConfig = getattr(self.cfg.train, stage)
        phases = stage_phases(st_cfg)
        model, best, ds = self._open_stage(stage, st_cfg, phases)
        while self.state.phase < len(phases):
            best = self._epoch(model, ds, stage, st_cfg, phases[self.state.phase], best)
        self._close_stage(stage, model, best)

    def _open_stage(self, stage: str, st_cfg: StageConfig, phases: list[Phase],
                    ) -> tuple[keras.Model, list[np.ndarray] | None, TrainBatches]:
        """The stage's network: restored from the checkpoint, or fresh (stage 2 taking stage
        1's mel branch); its batches; the best weights so far."""
        st = self.state
        model = self._build(stage)
        compile_network(model, phases[0].lr if phases else st_cfg.plateau_low_lr, self.run_eagerly)
        resuming = self.ckpt.snapshot(st) is not None
        best: list[np.ndarray] | None = None
        if resuming:
            best = self.ckpt.restore(st, model)
            log.info("fold %d: resuming %s at epoch %d (phase %s)", self.fold, stage,
                     st.stage_epoch, phases[st.phase].name if st.phase < len(phases) else "-")
        elif stage == "stage2":
            stage1 = keras.saving.load_model(self.files.stage1_model, compile=False)
            transfer_mel_branch(stage1, model)
            del stage1
        ds = self._batches(stage, st_cfg)
        if not resuming:
            self._init_input_statistics(model, ds, stage)
        log.info("fold %d %s: %d training clips, %d steps/epoch of %d, crops %s frames",
                 self.fold, stage, len(self.data.train_rows), len(ds), ds.batch_size,
                 ds.crop_lengths.tolist())
        return model, best, ds

    def _epoch(self, model: keras.Model, ds: TrainBatches, stage: str, st_cfg: StageConfig,
               phase: Phase, best: list[np.ndarray] | None) -> list[np.ndarray] | None:
        """One epoch of ``phase``: train, validate, keep the best weights, step the schedule,
        checkpoint, report; returns the best weights."""
        st = self.state
        if st.phase_epoch == 0:
            if best is not None:
                model.set_weights(best)  # each phase restarts from the stage's best
            _reset_optimizer(model, phase.lr)
            st.lr = phase.lr
            st.plateau = None if phase.cyclic else plateau_for(st_cfg, phase).to_dict()
        plateau = PlateauState.from_dict(st.plateau) if st.plateau else None
        lr = float(st.lr)
        model.optimizer.learning_rate = lr
        loss, lr_used = self._train_epoch(model, ds, phase, stage, lr)
        val_loss, val_map3, val_acc, _ = self.validate(model, stage)
        epoch = st.stage_epoch
        if val_loss < st.best_val_loss:
            st.best_val_loss, st.best_epoch = val_loss, epoch
            best = model.get_weights()
        stop = False
        if plateau is not None:
            stop = plateau.update(val_loss)
            st.plateau = plateau.to_dict()
            st.lr = plateau.lr
        metrics = {"loss": loss, "val_loss": val_loss, "val_map3": val_map3,
                   "val_accuracy": val_acc, "lr": lr_used}
        st.history.append({"stage": stage, "phase": phase.name, "epoch": epoch, **metrics})
        st.stage_epoch += 1
        st.phase_epoch += 1
        if stop or st.phase_epoch >= phase.max_epochs:
            st.phase += 1
            st.phase_epoch = 0
        log.info("fold %d %s %s epoch %d: loss %.4f val_loss %.4f val_map3 %.4f lr %.3g%s",
                 self.fold, stage, phase.name, epoch, loss, val_loss, val_map3, lr_used,
                 " (early stop)" if stop else "")
        self.ckpt.save(st, model, best)
        self._write_history()
        if self.on_epoch is not None:
            self.on_epoch(stage, epoch, metrics)
        return best

    def _close_stage(self, stage: str, model: keras.Model, best: list[np.ndarray] | None) -> None:
        """Save the stage's best network; after stage 2, pick the stage the fold keeps."""
        if best is not None:
            model.set_weights(best)
        save_model(model, self.files.stage1_model if stage == "stage1" else self.files.model)
        if stage == "stage2":
            self.state.selected_stage = self._select_stage()
        nxt = STAGES.index(stage) + 1
        self.state.start_stage(STAGES[nxt] if nxt < len(STAGES) else "done")
        self.ckpt.save(self.state, None, None)

    def _select_stage(self) -> str:
        """Which stage's network the fold keeps as model.keras (see train.keep_better_stage)."""
        hist = pd.DataFrame(self.state.history, columns=HISTORY_COLUMNS)
        best = hist.groupby("stage")["val_loss"].min().to_dict()
        s1, s2 = best.get("stage1", math.inf), best.get("stage2", math.inf)
        if self.cfg.train.keep_better_stage and s1 < s2:
            log.info("fold %d: stage 1 validates better than stage 2 (val_loss %.4f < %.4f); "
                     "the fold keeps stage 1's network", self.fold, s1, s2)
            tmp = self.files.model.with_name(FoldDir.model + ".tmp")
            shutil.copyfile(self.files.stage1_model, tmp)
            os.replace(tmp, self.files.model)
            return "stage1"
        return "stage2"

    def _write_history(self) -> pd.DataFrame:
        hist = pd.DataFrame(self.state.history, columns=HISTORY_COLUMNS)
        tmp = self.files.history.with_name(FoldDir.history + ".tmp")
        hist.to_csv(tmp, index=False)
        os.replace(tmp, self.files.history)
        return hist

    # ---- outputs
    def finish(self) -> FoldResult:
        """Validate the kept network, write oof.csv, history, plots and result.json."""
        from fsd.model.networks import network_pca_dim

        model = keras.saving.load_model(self.files.model, compile=False)
        if self.run_eagerly:
            model.compile(run_eagerly=True)
        val_loss, val_map3, val_acc, probs = self.validate(
            model, "stage2" if network_pca_dim(model) else "stage1")
        idx = self.store.index.iloc[self.data.val_rows]
        oof = pd.DataFrame(probs, columns=self.data.labels)
        oof.insert(0, "label", idx["label"].to_numpy())
        oof.insert(0, "fname", idx["fname"].to_numpy())
        oof.to_csv(self.files.oof, index=False)
        hist = self._write_history()
        plots = self._plots(hist, probs)
        metrics = {"fold": self.fold, "val_map3": val_map3, "val_accuracy": val_acc,
                   "val_loss": val_loss, **self._summary(hist, model)}
        atomic_write_text(self.files.result, json.dumps(metrics, indent=1))
        log.info("fold %d done: val_map3 %.4f val_loss %.4f", self.fold, val_map3, val_loss)
        result = _result(self.fold, self.files, hist, metrics)
        result.plots = plots
        return result

    def _plots(self, hist: pd.DataFrame, probs: np.ndarray) -> dict[str, Path]:
        from fsd.evaluation.plots import plot_confusion_matrix, plot_per_class_ap
        from fsd.train.report import plot_training_curves

        labels, plots_dir = self.data.labels, self.files.plots
        plots_dir.mkdir(exist_ok=True)
        kept = f"fold {self.fold}, {self.state.selected_stage or 'stage2'}'s model"
        return {
            "training_curves": plot_training_curves(
                hist, plots_dir / "training_curves.png", title=f"fold {self.fold}"),
            "confusion_matrix": plot_confusion_matrix(
                self.data.val_y, probs.argmax(axis=1), labels, plots_dir / "confusion_matrix.png",
                title=kept),
            "per_class_ap": plot_per_class_ap(
                per_class_ap(self.data.val_y, probs, len(labels)), labels,
                plots_dir / "per_class_ap.png", title=kept),
        }

    def _summary(self, hist: pd.DataFrame, model: keras.Model) -> dict[str, Any]:
        """result.json besides the kept model's validation: counts, each stage's best epoch,
        crop limits, sizes and throughput."""
        st = self.state
        per_stage = hist.groupby("stage").size().to_dict()
        s1 = hist[hist["stage"] == "stage1"]
        s2 = hist[hist["stage"] == "stage2"]
        return {
            "n_train": len(self.data.train_rows),
            "n_val": len(self.data.val_rows),
            "epochs": len(hist),
            "epochs_stage1": int(per_stage.get("stage1", 0)),
            "epochs_stage2": int(per_stage.get("stage2", 0)),
            "stage1_val_map3": _at_best(s1, "val_map3"),
            "stage1_val_accuracy": _at_best(s1, "val_accuracy"),
            "val_lengths": [int(v) for v in self.data.val_lengths],
            "selected_stage": st.selected_stage or "stage2",
            "stage2_val_accuracy": _at_best(s2, "val_accuracy"),
            "stage2_val_map3": _at_best(s2, "val_map3"),
            "distinct_shapes": len(st.shapes),
            "crop_min": int(self.data.crop[0]),
            "crop_max": int(self.data.crop[1]),
            "pca_components": int(self.data.pca_train.shape[1]),
            "params": int(model.count_params()),
            "samples_per_s": st.train_samples / st.train_seconds if st.train_seconds else 0.0,
            "train_seconds": float(st.train_seconds),
        }


def _at_best(stage_hist: pd.DataFrame, column: str) -> float:
    """``column`` at the stage's lowest val_loss (NaN for a stage that did not run)."""
    if not len(stage_hist):
        return float("nan")
    return float(stage_hist.loc[stage_hist["val_loss"].idxmin(), column])


def _result(fold: int, files: FoldDir, hist: pd.DataFrame, metrics: dict[str, Any]) -> FoldResult:
    plots = {p.stem: p for p in sorted(files.plots.glob("*.png"))}
    return FoldResult(fold, files.path, files.model, files.projector, files.history, files.oof,
                      files.result, plots, hist, metrics)


def train_fold(cfg: Config, store: FeatureSource, fold: int, workdir: str | Path,
               on_epoch: OnEpoch | None = None, progress: bool = True, *,
               run_eagerly: bool = False) -> FoldResult:
    """Train the two-stage recipe holding out ``fold``; resume from ``workdir`` if it has a
    checkpoint. ``on_epoch(stage, epoch, metrics)`` is called after each epoch's checkpoint
    (``epoch`` counts from 0 across a stage's phases); an exception it raises propagates.

    ``run_eagerly`` skips graph tracing (about 15-25 s per network on a small CPU): slower per
    step, so only for tests and debugging on tiny data.
    """
    files = FoldDir(Path(workdir))
    files.path.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpoint(files.checkpoint)
    saved = ckpt.load_state()
    # Cheap checks first, so a wrong fold or class count fails before any PCA or training.
    _, _, labels = check_store(store, fold)
    if saved is not None and len(saved.get("labels", [])) != len(labels):
        raise TrainError(f"the checkpoint in {ckpt.dir} was trained on "
                         f"{len(saved.get('labels', []))} classes but the feature store has "
                         f"{len(labels)}; use a fresh workdir or delete {ckpt.dir}")
    data = prepare(cfg, store, fold, files.path, resuming=saved is not None)
    key = model_key(cfg, data)
    train_key = json.dumps({k: v for k, v in cfg.to_dict()["train"].items()
                            if k != "fold_workers"}, sort_keys=True)
    if saved is None:
        state = TrainState.new(fold, labels, key, train_key, cfg.train.seed)
    else:
        check_resume(saved, fold, labels, key, train_key, ckpt.dir)
        state = TrainState.from_dict(saved)
        if state.stage == "done" and files.result.exists():
            log.info("fold %d already trained in %s", fold, files.path)
            return _result(fold, files, pd.read_csv(files.history), files.read_result())
    trainer = _FoldTrainer(cfg, store, fold, files.path, data, state, on_epoch, progress,
                           run_eagerly)
    for stage in STAGES:
        if state.stage == stage:
            trainer.run_stage(stage)
    return trainer.finish()
