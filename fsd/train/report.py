"""A fold's plots: training curves, confusion matrix, per-class average precision."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def plot_training_curves(history: pd.DataFrame, path: Path) -> Path:
    """loss/val_loss, val_map3 and lr per epoch, one colour per stage, phases marked."""
    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    h = history.reset_index(drop=True)
    step = np.arange(len(h))
    for stage, color in zip(sorted(h["stage"].unique()), ("tab:blue", "tab:orange", "tab:green")):
        m = (h["stage"] == stage).to_numpy()
        axes[0].plot(step[m], h["loss"][m], "--", color=color, label=f"{stage} loss")
        axes[0].plot(step[m], h["val_loss"][m], "-", color=color, label=f"{stage} val_loss")
        axes[1].plot(step[m], h["val_map3"][m], "-o", ms=3, color=color, label=stage)
        axes[2].plot(step[m], h["lr"][m], "-", color=color, label=stage)
    # Phase boundaries help read the jumps that reloading the best weights causes.
    if len(h):
        change = (h["stage"] + h["phase"]).ne((h["stage"] + h["phase"]).shift()).to_numpy()
        for s in step[change][1:]:
            for ax in axes:
                ax.axvline(s - 0.5, color="grey", lw=0.6, ls=":")
    axes[0].set_ylabel("cross-entropy")
    axes[1].set_ylabel("val MAP@3")
    axes[2].set_ylabel("learning rate")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("epoch (both stages, phases A/B/C marked)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str],
                          path: Path) -> Path:
    """Row-normalised confusion matrix of the top-1 predictions."""
    n = len(labels)
    cm = np.zeros((n, n))
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = max(6.0, 0.22 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=90, fontsize=6)
    ax.set_yticks(range(n), labels, fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_per_class_ap(ap: np.ndarray, labels: list[str], path: Path) -> Path:
    """Average precision per class, sorted; classes absent from the fold are left out."""
    ok = ~np.isnan(ap)
    order = np.argsort(ap[ok])
    names = np.asarray(labels)[ok][order]
    fig, ax = plt.subplots(figsize=(7, max(3.0, 0.2 * len(names) + 1)))
    ax.barh(range(len(names)), ap[ok][order], color="tab:blue")
    ax.set_yticks(range(len(names)), names, fontsize=6)
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"average precision (mean {np.nanmean(ap):.3f})" if ok.any() else "no classes")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
