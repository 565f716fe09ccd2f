"""The per-stage schedule: A (cyclic triangular LR), then B and C (plateau phases).

Pure Python state, so the fit loop can checkpoint it as JSON and resume mid-phase; the
plateau rules reproduce Keras' EarlyStopping (min_delta 0) and ReduceLROnPlateau
(min_delta 1e-4, cooldown 0) as the original used them, one fresh pair per phase.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from fsd.config import StageConfig


def triangular_lr(iteration: int, step_size: int, lr_min: float, lr_max: float) -> float:
    """Smith's triangular cyclic LR: lr_min -> lr_max over ``step_size`` iterations and back."""
    if step_size < 1:
        raise ValueError(f"step_size must be >= 1, got {step_size}")
    cycle = math.floor(1 + iteration / (2 * step_size))
    x = abs(iteration / step_size - 2 * cycle + 1)
    return lr_min + (lr_max - lr_min) * max(0.0, 1.0 - x)


@dataclass(frozen=True)
class Phase:
    """One phase of a stage. ``cyclic``: LR follows :func:`triangular_lr` (step = 1 epoch)."""

    name: str
    max_epochs: int
    lr: float
    cyclic: bool = False
    lr_max: float = 0.0


def stage_phases(st: StageConfig) -> list[Phase]:
    """A, B, C for one stage, skipping phases configured with 0 epochs."""
    phases = [
        Phase("A", st.cyclic_epochs, st.cyclic_lr_min, cyclic=True, lr_max=st.cyclic_lr_max),
        Phase("B", st.plateau_low_epochs, st.plateau_low_lr),
        Phase("C", st.plateau_high_epochs, st.plateau_high_lr),
    ]
    return [p for p in phases if p.max_epochs > 0]


@dataclass
class PlateauState:
    """EarlyStopping(patience) + ReduceLROnPlateau(factor, patience) on val_loss."""

    stop_patience: int
    lr_patience: int
    factor: float
    lr: float
    lr_min_delta: float = 1e-4
    stop_best: float = math.inf
    stop_wait: int = 0
    lr_best: float = math.inf
    lr_wait: int = 0
    epochs: int = 0

    def update(self, val_loss: float) -> bool:
        """Account one epoch's val_loss; may lower ``lr``; returns True when training stops."""
        self.epochs += 1
        if val_loss < self.lr_best - self.lr_min_delta:
            self.lr_best, self.lr_wait = val_loss, 0
        else:
            self.lr_wait += 1
            if self.lr_wait >= self.lr_patience:
                self.lr *= self.factor
                self.lr_wait = 0
        self.stop_wait += 1
        if val_loss < self.stop_best:
            self.stop_best, self.stop_wait = val_loss, 0
            return False
        # Keras never stops after the first epoch of a fit (epoch > 0).
        return self.stop_wait >= self.stop_patience and self.epochs > 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PlateauState:
        return cls(**d)


def plateau_for(st: StageConfig, phase: Phase) -> PlateauState:
    return PlateauState(stop_patience=st.early_stopping_patience,
                        lr_patience=st.reduce_lr_patience, factor=st.reduce_lr_factor,
                        lr=phase.lr)
