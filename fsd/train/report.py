"""A fold's plots: training curves, confusion matrix, per-class average precision.

Every plot names what it shows in its title (``title``: e.g. ``fold 0, stage 2``), and
stays readable at FSDKaggle2018's 41 classes: class labels of 8 pt, figures sized by the
number of classes, labelled colour scales, a count in every non-empty confusion cell.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

LABEL_FONTSIZE = 8  # class names; 41 of them still fit at 0.3 in per class


def _titled(title: str, what: str) -> str:
    return f"{title}: {what}" if title else what


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
    axes[0].set_title(_titled(title, "training curves"))
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return cm


def draw_confusion(counts: np.ndarray, labels: list[str], title: str, path: Path,
                   xlabel: str = "predicted (top 1)") -> Path:
    """A confusion matrix coloured by the share of each true class (rows sum to 1), with the
    clip count written in every non-empty cell."""
    n = len(labels)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(6.0, 0.3 * n + 3)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    cell_font = 9 if n <= 12 else (7 if n <= 30 else 6)
    for i, j in zip(*np.nonzero(counts)):
        ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=cell_font,
                color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), labels, rotation=90, fontsize=LABEL_FONTSIZE)
    ax.set_yticks(range(n), labels, fontsize=LABEL_FONTSIZE)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("true class")
    ax.set_title(f"{title}\n{int(counts.sum())} clips, accuracy "
                 f"{np.trace(counts) / max(counts.sum(), 1):.3f}; cells: clip counts")
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    bar.set_label("share of the true class's clips (row-normalised)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str],
                          path: Path, title: str = "") -> Path:
    """Confusion matrix of the top-1 predictions on the held-out fold."""
    counts = confusion_counts(y_true, y_pred, len(labels))
    return draw_confusion(counts, labels, _titled(title, "confusion on the held-out fold"), path)


def plot_per_class_ap(ap: np.ndarray, labels: list[str], path: Path, title: str = "") -> Path:
    """Average precision per class, sorted; classes absent from the fold are left out."""
    ok = ~np.isnan(ap)
    order = np.argsort(ap[ok])
    names = np.asarray(labels)[ok][order]
    values = ap[ok][order]
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.26 * len(names) + 1.5)))
    ax.barh(range(len(names)), values, color="tab:blue")
    for i, v in enumerate(values):
        ax.text(min(v, 1.0) + 0.01, i, f"{v:.2f}", va="center", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=LABEL_FONTSIZE)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_xlim(0, 1.08)
    mean = f"mean {np.nanmean(ap):.3f}" if ok.any() else "no classes"
    ax.set_xlabel(f"average precision on the held-out fold ({mean})")
    ax.set_title(_titled(title, "average precision per class"))
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
