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
from fsd.model.tta import predict_ensemble, spaced_lengths
from fsd.train.batches import FeatureSource, TrainBatches, load_clips, prefetch, resolve_crop_limits
from fsd.train.schedule import Phase, PlateauState, plateau_for, stage_phases, triangular_lr

log = logging.getLogger(__name__)

STAGES = ("stage1", "stage2")
HISTORY_COLUMNS = ["stage", "phase", "epoch", "loss", "val_loss", "val_map3", "val_accuracy", "lr"]
CHECKPOINT_VERSION = 1
OnEpoch = Callable[[str, int, dict[str, float]], None]


class TrainError(ValueError):
    """A fold that cannot be trained as asked (raised before any training starts)."""


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


# --------------------------------------------------------------------------- files


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _save_arrays(path: Path, arrays: list[np.ndarray]) -> None:
    np.savez(path, *arrays)


def _load_arrays(path: Path) -> list[np.ndarray]:
    with np.load(path) as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]


def _save_model(model: keras.Model, path: Path) -> None:
    """Save weights and architecture without optimizer state (smaller, loads uncompiled)."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    tmp = path.with_name(path.stem + ".partial.keras")
    clone.save(tmp)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- fold data


@dataclass
class _FoldData:
    labels: list[str]
    train_rows: np.ndarray
    val_rows: np.ndarray
    val_y: np.ndarray
    val_clips: list[np.ndarray]
    n_mels: int
    crop: tuple[int, int]
    val_lengths: list[int]
    pca_train: np.ndarray
    pca_val: np.ndarray
    projector_path: Path


def _check_store(store: FeatureSource, fold: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Rows of the training and validation folds; clear errors for unusable stores."""
    for attr in ("index", "labels", "logmel"):
        if not hasattr(store, attr):
            raise TrainError(f"the feature store has no {attr!r}; was featurize run?")
    index = store.index
    missing = {"label_id", "fold", "verified", "frames"} - set(index.columns)
    if missing:
        raise TrainError(f"the feature store index lacks columns {sorted(missing)}")
    labels = list(store.labels)
    if len(index) == 0:
        raise TrainError("the feature store holds no clips")
    label_ids = index["label_id"].to_numpy(np.int64)
    if label_ids.min() < 0 or label_ids.max() >= len(labels):
        raise TrainError(f"label ids run {label_ids.min()}..{label_ids.max()} but the store "
                         f"has {len(labels)} labels")
    folds = index["fold"].to_numpy(np.int64)
    present = sorted(int(f) for f in np.unique(folds) if f >= 0)
    if fold not in present:
        raise TrainError(f"fold {fold} is not a fold of this feature store (its folds: "
                         f"{present}); pick train.fold among them")
    # Rows the featurizer could not process (ok=False) or that hold no frames cannot train.
    usable = index["frames"].to_numpy(np.int64) > 0
    if "ok" in index.columns:
        usable &= index["ok"].to_numpy(bool)
    if not usable.all():
        log.warning("skipping %d clips without features", int((~usable).sum()))
    val_rows = np.flatnonzero((folds == fold) & usable)
    train_rows = np.flatnonzero((folds != fold) & usable)
    if len(val_rows) == 0:
        raise TrainError(f"fold {fold} holds no clips with features")
    if len(train_rows) == 0:
        raise TrainError(f"holding out fold {fold} leaves no training clips")
    if len(np.unique(label_ids[train_rows])) < 2:
        raise TrainError("the training folds hold fewer than 2 classes")
    return train_rows, val_rows, labels


def _summary(store: FeatureSource) -> np.ndarray:
    try:
        summary = store.summary
    except Exception as exc:
        raise TrainError(f"the feature store has no summary features ({exc}); stage 2 needs "
                         "them: featurize with summary.enabled=true") from None
    if summary is None:
        raise TrainError("the feature store has no summary features; stage 2 needs them: "
                         "featurize with summary.enabled=true")
    summary = np.asarray(summary)
    if summary.ndim != 2 or len(summary) != len(store.index):
        raise TrainError(f"summary features have shape {summary.shape}, expected "
                         f"({len(store.index)}, n_features)")
    return summary


def _fit_projector(cfg: Config, x: np.ndarray, path: Path):
    from fsd.features.projection import SummaryProjector

    try:
        # caps n_components at min(clips, features) itself, for small data like the sample
        projector = SummaryProjector.from_config(cfg.pca).fit(x)
    except ValueError as exc:
        raise TrainError(f"cannot fit the summary projection: {exc}") from None
    projector.save(path)
    return projector


def _prepare(cfg: Config, store: FeatureSource, fold: int, workdir: Path,
             resuming: bool) -> _FoldData:
    train_rows, val_rows, labels = _check_store(store, fold)
    summary = _summary(store)
    try:
        probe = np.asarray(store.logmel(int(train_rows[0])))
    except Exception as exc:
        raise TrainError(f"cannot read log-mel features from the store: {exc}") from None
    if probe.ndim != 2:
        raise TrainError(f"log-mels must be (frames, n_mels), got shape {probe.shape}")
    frames = store.index["frames"].to_numpy(np.int64)[train_rows]
    crop = resolve_crop_limits(cfg.train, dict(getattr(store, "meta", {}) or {}), frames)

    from fsd.features.projection import SummaryProjector

    projector_path = workdir / "projector.joblib"
    if resuming and projector_path.exists():
        projector = SummaryProjector.load(projector_path)
    else:
        fit_rows = train_rows if cfg.pca.fit_on == "train_folds" else np.arange(len(summary))
        projector = _fit_projector(cfg, summary[fit_rows], projector_path)
    pca_train = np.asarray(projector.transform(summary[train_rows]), dtype=np.float32)
    pca_val = np.asarray(projector.transform(summary[val_rows]), dtype=np.float32)
    val_clips = load_clips(store, val_rows)
    val_y = store.index["label_id"].to_numpy(np.int64)[val_rows]
    val_lengths = spaced_lengths(cfg.train.val_lengths, cfg.train.val_n_lengths, *crop)
    return _FoldData(labels, train_rows, val_rows, val_y, val_clips, probe.shape[1], crop,
                     val_lengths, pca_train, pca_val, projector_path)


# --------------------------------------------------------------------------- checkpoint


def _model_key(cfg: Config, data: _FoldData) -> str:
    return json.dumps({"model": cfg.to_dict()["model"], "pca": cfg.to_dict()["pca"],
                       "pca_dim": int(data.pca_train.shape[1]), "n_mels": data.n_mels},
                      sort_keys=True)


class _Checkpoint:
    """``checkpoint/state.json`` names the current snapshot folder; both change atomically.

    A snapshot folder is written completely under a temporary name and renamed; only then is
    state.json replaced (os.replace), and only then are older snapshots removed, so a kill at
    any point leaves a consistent state.json + snapshot pair.
    """

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "checkpoint"
        self.state_path = self.dir / "state.json"

    def load_state(self) -> dict | None:
        if not self.state_path.exists():
            return None
        try:
            return json.loads(self.state_path.read_text())
        except json.JSONDecodeError as exc:
            raise TrainError(f"{self.state_path} is corrupt ({exc}); delete {self.dir} to "
                             "start the fold afresh") from None

    def snapshot(self, state: dict) -> Path | None:
        name = state.get("snapshot")
        return self.dir / name if name else None

    def save(self, state: dict, model: keras.Model | None, best: list[np.ndarray] | None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if model is not None:
            name = f"{state['stage']}-{state['stage_epoch']:05d}"
            tmp = self.dir / (name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            _save_arrays(tmp / "weights.npz", model.get_weights())
            _save_arrays(tmp / "optimizer.npz",
                         [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables])
            _save_arrays(tmp / "best.npz", best if best is not None else [])
            final = self.dir / name
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            state["snapshot"] = name
        else:
            state["snapshot"] = None
        _atomic_write_text(self.state_path, json.dumps(state, indent=1))
        for p in self.dir.iterdir():
            if p.is_dir() and p.name != state["snapshot"]:
                shutil.rmtree(p, ignore_errors=True)


def _new_state(fold: int, labels: list[str], model_key: str, train_key: str,
               seed: int) -> dict:
    # The RNG "state" is its derivation: augmentation draws come from numpy
    # SeedSequence([seed, stream, epoch, step]), stream = 100 * fold + stage number, and each
    # stage's network is initialised after keras.utils.set_random_seed(seed + 1000 * fold +
    # stage index); the epoch counters below are all a resumed run needs to continue them.
    rng = {"seed": seed, "data_stream": {s: 100 * fold + i + 1 for i, s in enumerate(STAGES)},
           "init_seed": {s: seed + 1000 * fold + i for i, s in enumerate(STAGES)}}
    return {"version": CHECKPOINT_VERSION, "fold": fold, "labels": labels, "rng": rng,
            "model_key": model_key, "train_key": train_key, "stage": STAGES[0],
            **_stage_start(), "history": [], "shapes": [], "train_seconds": 0.0,
            "train_samples": 0, "snapshot": None}


def _stage_start() -> dict:
    return {"phase": 0, "phase_epoch": 0, "stage_epoch": 0, "plateau": None, "lr": None,
            "best_val_loss": math.inf, "best_epoch": -1}


def _check_resume(state: dict, fold: int, labels: list[str], model_key: str,
                  train_key: str, ckdir: Path) -> None:
    hint = f"use a fresh workdir or delete {ckdir} to start this fold afresh"
    if state.get("version") != CHECKPOINT_VERSION:
        raise TrainError(f"checkpoint format {state.get('version')} is not {CHECKPOINT_VERSION}; {hint}")
    if state["fold"] != fold:
        raise TrainError(f"the checkpoint in {ckdir} is for fold {state['fold']}, not {fold}; {hint}")
    if len(state["labels"]) != len(labels):
        raise TrainError(f"the checkpoint in {ckdir} was trained on {len(state['labels'])} "
                         f"classes but the feature store has {len(labels)}; {hint}")
    if state["labels"] != labels:
        raise TrainError(f"the checkpoint in {ckdir} has other class names than the feature "
                         f"store; {hint}")
    if state["model_key"] != model_key:
        raise TrainError(f"the model or PCA configuration differs from the checkpoint's; {hint}")
    if state["train_key"] != train_key:
        log.warning("training settings changed since the checkpoint; continuing with the new ones")


# --------------------------------------------------------------------------- training


def _reset_optimizer(model: keras.Model, lr: float) -> None:
    """A fresh Adam (zero moments, step 0) without recompiling, which would retrace."""
    opt = model.optimizer
    if not opt.built:
        opt.build(model.trainable_variables)
    for v in opt.variables:
        v.assign(np.zeros(v.shape, dtype=keras.backend.standardize_dtype(v.dtype)))
    opt.learning_rate = lr


def _compile(model: keras.Model, lr: float, run_eagerly: bool = False) -> None:
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
    def __init__(self, cfg: Config, store: FeatureSource, fold: int, workdir: Path,
                 data: _FoldData, state: dict, on_epoch: OnEpoch | None, progress: bool,
                 run_eagerly: bool = False) -> None:
        self.cfg, self.store, self.fold, self.workdir = cfg, store, fold, workdir
        self.run_eagerly = run_eagerly
        self.data, self.state, self.on_epoch, self.progress = data, state, on_epoch, progress
        self.ckpt = _Checkpoint(workdir)
        self.shapes: set[tuple[int, ...]] = {tuple(s) for s in state["shapes"]}

    # ---- pieces
    def _build(self, stage: str) -> keras.Model:
        # Seed per stage so a resumed run builds the same fresh head as an uninterrupted one.
        keras.utils.set_random_seed(self.state["rng"]["init_seed"][stage])
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
            pca=self.data.pca_train if stage == "stage2" else None, seed=self.state["rng"]["seed"],
            stream=self.state["rng"]["data_stream"][stage],
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
                                desc=f"fold {self.fold} {stage} {phase.name} epoch {st['stage_epoch']}")
        t0 = time.perf_counter()
        try:
            losses, lr = run_epoch(model, ds, st["stage_epoch"], phase, st["phase_epoch"], lr, bar)
        finally:
            bar.close()
        if not all(math.isfinite(v) for v in losses):
            raise TrainError(f"training loss became {losses[-1]} in {stage} phase {phase.name} "
                             f"epoch {st['stage_epoch']} (learning rate {lr:g})")
        st["train_seconds"] += time.perf_counter() - t0
        st["train_samples"] += len(ds) * ds.batch_size
        self.shapes |= ds.shapes
        st["shapes"] = sorted(list(s) for s in self.shapes)
        return float(np.mean(losses)), lr

    # ---- one stage
    def run_stage(self, stage: str) -> None:
        st_cfg: StageConfig = getattr(self.cfg.train, stage)
        phases = stage_phases(st_cfg)
        st = self.state
        model = self._build(stage)
        _compile(model, phases[0].lr if phases else st_cfg.plateau_low_lr, self.run_eagerly)
        snap = self.ckpt.snapshot(st)
        best: list[np.ndarray] | None = None
        if snap is not None:
            model.set_weights(_load_arrays(snap / "weights.npz"))
            for v, a in zip(model.optimizer.variables, _load_arrays(snap / "optimizer.npz")):
                v.assign(a)
            best = _load_arrays(snap / "best.npz") or None
            log.info("fold %d: resuming %s at epoch %d (phase %s)", self.fold, stage,
                     st["stage_epoch"], phases[st["phase"]].name if st["phase"] < len(phases) else "-")
        elif stage == "stage2":
            stage1 = keras.saving.load_model(self.workdir / "stage1.keras", compile=False)
            transfer_mel_branch(stage1, model)
            del stage1
        ds = self._batches(stage, st_cfg)
        if snap is None:
            self._init_input_statistics(model, ds, stage)
        log.info("fold %d %s: %d training clips, %d steps/epoch of %d, crops %s frames",
                 self.fold, stage, len(self.data.train_rows), len(ds), ds.batch_size,
                 ds.crop_lengths.tolist())

        while st["phase"] < len(phases):
            phase = phases[st["phase"]]
            if st["phase_epoch"] == 0:
                if best is not None:
                    model.set_weights(best)  # each phase restarts from the stage's best
                _reset_optimizer(model, phase.lr)
                st["lr"] = phase.lr
                st["plateau"] = None if phase.cyclic else plateau_for(st_cfg, phase).to_dict()
            plateau = PlateauState.from_dict(st["plateau"]) if st["plateau"] else None
            lr = float(st["lr"])
            model.optimizer.learning_rate = lr
            loss, lr_used = self._train_epoch(model, ds, phase, stage, lr)
            val_loss, val_map3, val_acc, _ = self.validate(model, stage)
            epoch = st["stage_epoch"]
            if val_loss < st["best_val_loss"]:
                st["best_val_loss"], st["best_epoch"] = val_loss, epoch
                best = model.get_weights()
            stop = False
            if plateau is not None:
                stop = plateau.update(val_loss)
                st["plateau"] = plateau.to_dict()
                st["lr"] = plateau.lr
            metrics = {"loss": loss, "val_loss": val_loss, "val_map3": val_map3,
                       "val_accuracy": val_acc, "lr": lr_used}
            st["history"].append({"stage": stage, "phase": phase.name, "epoch": epoch, **metrics})
            st["stage_epoch"] += 1
            st["phase_epoch"] += 1
            if stop or st["phase_epoch"] >= phase.max_epochs:
                st["phase"] += 1
                st["phase_epoch"] = 0
            log.info("fold %d %s %s epoch %d: loss %.4f val_loss %.4f val_map3 %.4f lr %.3g%s",
                     self.fold, stage, phase.name, epoch, loss, val_loss, val_map3, lr_used,
                     " (early stop)" if stop else "")
            self.ckpt.save(st, model, best)
            self._write_history()
            if self.on_epoch is not None:
                self.on_epoch(stage, epoch, metrics)

        if best is not None:
            model.set_weights(best)
        out = self.workdir / ("stage1.keras" if stage == "stage1" else "model.keras")
        _save_model(model, out)
        if stage == "stage2":
            st["selected_stage"] = self._select_stage()
        nxt = STAGES.index(stage) + 1
        st.update(stage=STAGES[nxt] if nxt < len(STAGES) else "done", **_stage_start())
        self.ckpt.save(st, None, None)

    def _select_stage(self) -> str:
        """Which stage's network the fold keeps as model.keras (see train.keep_better_stage)."""
        hist = pd.DataFrame(self.state["history"], columns=HISTORY_COLUMNS)
        best = hist.groupby("stage")["val_loss"].min().to_dict()
        s1, s2 = best.get("stage1", math.inf), best.get("stage2", math.inf)
        if self.cfg.train.keep_better_stage and s1 < s2:
            log.info("fold %d: stage 1 validates better than stage 2 (val_loss %.4f < %.4f); "
                     "the fold keeps stage 1's network", self.fold, s1, s2)
            shutil.copyfile(self.workdir / "stage1.keras", self.workdir / "model.keras.tmp")
            os.replace(self.workdir / "model.keras.tmp", self.workdir / "model.keras")
            return "stage1"
        return "stage2"

    def _write_history(self) -> pd.DataFrame:
        hist = pd.DataFrame(self.state["history"], columns=HISTORY_COLUMNS)
        tmp = self.workdir / "history.csv.tmp"
        hist.to_csv(tmp, index=False)
        os.replace(tmp, self.workdir / "history.csv")
        return hist

    # ---- outputs
    def finish(self) -> FoldResult:
        from fsd.evaluation import plots as evaluation_plots
        from fsd.train import report

        wd = self.workdir
        model = keras.saving.load_model(wd / "model.keras", compile=False)
        if self.run_eagerly:
            model.compile(run_eagerly=True)
        from fsd.model.networks import network_pca_dim

        val_loss, val_map3, val_acc, probs = self.validate(
            model, "stage2" if network_pca_dim(model) else "stage1")
        labels = self.data.labels
        idx = self.store.index.iloc[self.data.val_rows]
        oof = pd.DataFrame(probs, columns=labels)
        oof.insert(0, "label", idx["label"].to_numpy())
        oof.insert(0, "fname", idx["fname"].to_numpy())
        oof.to_csv(wd / "oof.csv", index=False)
        hist = self._write_history()
        plots_dir = wd / "plots"
        plots_dir.mkdir(exist_ok=True)
        kept = f"fold {self.fold}, {self.state.get('selected_stage', 'stage2')}'s model"
        plots = {
            "training_curves": report.plot_training_curves(
                hist, plots_dir / "training_curves.png", title=f"fold {self.fold}"),
            "confusion_matrix": evaluation_plots.plot_confusion_matrix(
                self.data.val_y, probs.argmax(axis=1), labels, plots_dir / "confusion_matrix.png",
                title=kept),
            "per_class_ap": evaluation_plots.plot_per_class_ap(
                per_class_ap(self.data.val_y, probs, len(labels)), labels,
                plots_dir / "per_class_ap.png", title=kept),
        }
        st = self.state
        per_stage = hist.groupby("stage").size().to_dict()
        s1 = hist[hist["stage"] == "stage1"]
        s2 = hist[hist["stage"] == "stage2"]
        metrics: dict[str, Any] = {
            "fold": self.fold,
            "val_map3": val_map3,
            "val_accuracy": val_acc,
            "val_loss": val_loss,
            "n_train": len(self.data.train_rows),
            "n_val": len(self.data.val_rows),
            "epochs": len(hist),
            "epochs_stage1": int(per_stage.get("stage1", 0)),
            "epochs_stage2": int(per_stage.get("stage2", 0)),
            "stage1_val_map3": (float(s1.loc[s1["val_loss"].idxmin(), "val_map3"]) if len(s1)
                                else float("nan")),
            "stage1_val_accuracy": (float(s1.loc[s1["val_loss"].idxmin(), "val_accuracy"])
                                    if len(s1) else float("nan")),
            "val_lengths": [int(v) for v in self.data.val_lengths],
            "selected_stage": st.get("selected_stage", "stage2"),
            "stage2_val_accuracy": (float(s2.loc[s2["val_loss"].idxmin(), "val_accuracy"])
                                    if len(s2) else float("nan")),
            "stage2_val_map3": (float(s2.loc[s2["val_loss"].idxmin(), "val_map3"])
                                if len(s2) else float("nan")),
            "distinct_shapes": len(st["shapes"]),
            "crop_min": int(self.data.crop[0]),
            "crop_max": int(self.data.crop[1]),
            "pca_components": int(self.data.pca_train.shape[1]),
            "params": int(model.count_params()),
            "samples_per_s": st["train_samples"] / st["train_seconds"] if st["train_seconds"] else 0.0,
            "train_seconds": float(st["train_seconds"]),
        }
        _atomic_write_text(wd / "result.json", json.dumps(metrics, indent=1))
        log.info("fold %d done: val_map3 %.4f val_loss %.4f", self.fold, val_map3, val_loss)
        result = _result(self.fold, wd, hist, metrics)
        result.plots = plots
        return result


def _result(fold: int, wd: Path, hist: pd.DataFrame, metrics: dict[str, Any]) -> FoldResult:
    plots = {p.stem: p for p in sorted((wd / "plots").glob("*.png"))}
    return FoldResult(fold, wd, wd / "model.keras", wd / "projector.joblib", wd / "history.csv",
                      wd / "oof.csv", wd / "result.json", plots, hist, metrics)


def train_fold(cfg: Config, store: FeatureSource, fold: int, workdir: str | Path,
               on_epoch: OnEpoch | None = None, progress: bool = True, *,
               run_eagerly: bool = False) -> FoldResult:
    """Train the two-stage recipe holding out ``fold``; resume from ``workdir`` if it has a
    checkpoint. ``on_epoch(stage, epoch, metrics)`` is called after each epoch's checkpoint
    (``epoch`` counts from 0 across a stage's phases); an exception it raises propagates.

    ``run_eagerly`` skips graph tracing (about 15-25 s per network on a small CPU): slower per
    step, so only for tests and debugging on tiny data.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ckpt = _Checkpoint(workdir)
    state = ckpt.load_state()
    # Cheap checks first, so a wrong fold or class count fails before any PCA or training.
    _, _, labels = _check_store(store, fold)
    if state is not None and len(state.get("labels", [])) != len(labels):
        raise TrainError(f"the checkpoint in {ckpt.dir} was trained on "
                         f"{len(state.get('labels', []))} classes but the feature store has "
                         f"{len(labels)}; use a fresh workdir or delete {ckpt.dir}")
    data = _prepare(cfg, store, fold, workdir, resuming=state is not None)
    model_key = _model_key(cfg, data)
    train_key = json.dumps({k: v for k, v in cfg.to_dict()["train"].items()
                            if k != "fold_workers"}, sort_keys=True)
    if state is None:
        state = _new_state(fold, labels, model_key, train_key, cfg.train.seed)
    else:
        _check_resume(state, fold, labels, model_key, train_key, ckpt.dir)
        if state["stage"] == "done" and (workdir / "result.json").exists():
            log.info("fold %d already trained in %s", fold, workdir)
            hist = pd.read_csv(workdir / "history.csv")
            return _result(fold, workdir, hist, json.loads((workdir / "result.json").read_text()))
    trainer = _FoldTrainer(cfg, store, fold, workdir, data, state, on_epoch, progress,
                           run_eagerly)
    for stage in STAGES:
        if state["stage"] == stage:
            trainer.run_stage(stage)
    return trainer.finish()
