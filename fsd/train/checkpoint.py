"""A fold's training state and its checkpoint on disk.

:class:`TrainState` is everything a resumed fold needs besides the weights: where it is
(stage, phase, epoch), the schedule's plateau state, the best validation loss, the history
and the counters; it is saved as ``checkpoint/state.json`` (the same keys as always, so older
checkpoints resume). :class:`Checkpoint` writes it with the weights, the optimizer variables
and the best weights after every epoch, atomically.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

log = logging.getLogger(__name__)

STAGES = ("stage1", "stage2")
CHECKPOINT_VERSION = 1


class TrainError(ValueError):
    """A fold that cannot be trained as asked (raised before any training starts)."""


@dataclass
class TrainState:
    """Where a fold's training is; field order is state.json's key order."""

    version: int
    fold: int
    labels: list[str]
    # The RNG "state" is its derivation: augmentation draws come from numpy
    # SeedSequence([seed, stream, epoch, step]), stream = 100 * fold + stage number, and each
    # stage's network is initialised after keras.utils.set_random_seed(seed + 1000 * fold +
    # stage index); the epoch counters below are all a resumed run needs to continue them.
    rng: dict[str, Any]
    model_key: str
    train_key: str
    stage: str  # stage1 | stage2 | done
    phase: int = 0  # index into the stage's phases (A, B, C)
    phase_epoch: int = 0
    stage_epoch: int = 0
    plateau: dict[str, Any] | None = None  # a PlateauState as a dict; None in a cyclic phase
    lr: float | None = None
    best_val_loss: float = math.inf
    best_epoch: int = -1
    history: list[dict[str, Any]] = field(default_factory=list)
    shapes: list[list[int]] = field(default_factory=list)  # distinct batch shapes seen
    train_seconds: float = 0.0
    train_samples: int = 0
    snapshot: str | None = None  # the checkpoint folder holding the weights
    selected_stage: str | None = None  # set when stage 2 ends (train.keep_better_stage)

    @classmethod
    def new(cls, fold: int, labels: list[str], model_key: str, train_key: str,
            seed: int) -> TrainState:
        rng = {"seed": seed, "data_stream": {s: 100 * fold + i + 1 for i, s in enumerate(STAGES)},
               "init_seed": {s: seed + 1000 * fold + i for i, s in enumerate(STAGES)}}
        return cls(version=CHECKPOINT_VERSION, fold=fold, labels=labels, rng=rng,
                   model_key=model_key, train_key=train_key, stage=STAGES[0])

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if data["selected_stage"] is None:  # as before: the key appears once stage 2 chose
            del data["selected_stage"]
        return data

    def start_stage(self, stage: str) -> None:
        """Move to ``stage`` (or "done") with its counters, schedule and best loss reset."""
        self.stage = stage
        self.phase = self.phase_epoch = self.stage_epoch = 0
        self.plateau = self.lr = None
        self.best_val_loss, self.best_epoch = math.inf, -1

    def init_seed(self, stage: str) -> int:
        return int(self.rng["init_seed"][stage])

    def data_stream(self, stage: str) -> int:
        return int(self.rng["data_stream"][stage])


def check_resume(state: dict[str, Any], fold: int, labels: list[str], model_key: str,
                 train_key: str, ckdir: Path) -> None:
    """Refuse a checkpoint of another format, fold, label set or model (a changed training
    setting only warns: the new one applies from here on)."""
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


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_arrays(path: Path, arrays: list[np.ndarray]) -> None:
    np.savez(path, *arrays)


def load_arrays(path: Path) -> list[np.ndarray]:
    with np.load(path) as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]


def save_model(model: keras.Model, path: Path) -> None:
    """Save weights and architecture without optimizer state (smaller, loads uncompiled)."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    tmp = path.with_name(path.stem + ".partial.keras")
    clone.save(tmp)
    os.replace(tmp, path)


class Checkpoint:
    """``checkpoint/state.json`` names the current snapshot folder; both change atomically.

    A snapshot folder is written completely under a temporary name and renamed; only then is
    state.json replaced (os.replace), and only then are older snapshots removed, so a kill at
    any point leaves a consistent state.json + snapshot pair.
    """

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.state_path = self.dir / "state.json"

    def load_state(self) -> dict[str, Any] | None:
        """state.json as written (checked by :func:`check_resume` before it becomes a
        :class:`TrainState`); None without a checkpoint."""
        if not self.state_path.exists():
            return None
        try:
            return json.loads(self.state_path.read_text())
        except json.JSONDecodeError as exc:
            raise TrainError(f"{self.state_path} is corrupt ({exc}); delete {self.dir} to "
                             "start the fold afresh") from None

    def snapshot(self, state: TrainState) -> Path | None:
        return self.dir / state.snapshot if state.snapshot else None

    def restore(self, state: TrainState, model: keras.Model) -> list[np.ndarray] | None:
        """Load the snapshot's weights and optimizer variables into ``model``; returns the
        best weights so far (None: none yet)."""
        snap = self.dir / str(state.snapshot)
        model.set_weights(load_arrays(snap / "weights.npz"))
        for v, a in zip(model.optimizer.variables, load_arrays(snap / "optimizer.npz")):
            v.assign(a)
        return load_arrays(snap / "best.npz") or None

    def save(self, state: TrainState, model: keras.Model | None,
             best: list[np.ndarray] | None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if model is not None:
            name = f"{state.stage}-{state.stage_epoch:05d}"
            tmp = self.dir / (name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            save_arrays(tmp / "weights.npz", model.get_weights())
            save_arrays(tmp / "optimizer.npz",
                        [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables])
            save_arrays(tmp / "best.npz", best if best is not None else [])
            final = self.dir / name
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            state.snapshot = name
        else:
            state.snapshot = None
        atomic_write_text(self.state_path, json.dumps(state.to_dict(), indent=1))
        for p in self.dir.iterdir():
            if p.is_dir() and p.name != state.snapshot:
                shutil.rmtree(p, ignore_errors=True)
