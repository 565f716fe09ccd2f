"""A fold's training curves (its confusion matrix and per-class AP: :mod:`fsd.evaluation.plots`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fsd.evaluation.plots import titled  # noqa: E402


def plot_training_curves(history: pd.DataFrame, path: Path, title: str = "") -> Path:
    """loss/val_loss, val_map3 and lr per epoch, one colour per stage, phases marked. The x
    axis is the epoch counted across both stages: the step MLflow logs them at."""
    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    h = history.reset_index(drop=True)
    step = np.arange(len(h))
    for stage, color in zip(sorted(h["stage"].unique()), ("tab:blue", "tab:orange", "tab:green")):
        m = (h["stage"] == stage).to_numpy()
        axes[0].plot(step[m], h["loss"][m], "--", color=color, label=f"{stage} loss (train)")
        axes[0].plot(step[m], h["val_loss"][m], "-", color=color, label=f"{stage} val_loss")
        axes[1].plot(step[m], h["val_map3"][m], "-o", ms=3, color=color, label=f"{stage} val_map3")
        axes[2].plot(step[m], h["lr"][m], "-", color=color, label=f"{stage} lr")
    # Phase boundaries help read the jumps that reloading the best weights causes.
    if len(h):
        change = (h["stage"] + h["phase"]).ne((h["stage"] + h["phase"]).shift()).to_numpy()
        for s in step[change][1:]:
            for ax in axes:
                ax.axvline(s - 0.5, color="grey", lw=0.6, ls=":")
        for s in step[change]:
            axes[0].annotate(f"{h['phase'][s]}", xy=(s, 1), xycoords=("data", "axes fraction"),
                             xytext=(2, -10), textcoords="offset points", fontsize=7,
                             color="grey")
    axes[0].set_ylabel("cross-entropy")
    axes[1].set_ylabel("val MAP@3 (no TTA)")
    axes[2].set_ylabel("learning rate")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("epoch, counted across both stages (MLflow step); phases A/B/C dotted")
    axes[0].set_title(titled(title, "training curves"))
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
