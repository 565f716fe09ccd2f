"""Evaluation plots: per-class and per-fold scores, confusion matrices, per-class AP.

Every plot names what it shows in its title (``title``: e.g. ``fold 0, stage 2``), and
stays readable at FSDKaggle2018's 41 classes: class labels of 8 pt, figures sized by the
number of classes, labelled colour scales, a count in every non-empty confusion cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from fsd.evaluation.oof import OOFScores, per_class_table  # noqa: E402

LABEL_FONTSIZE = 8  # class names; 41 of them still fit at 0.3 in per class


def titled(title: str, what: str) -> str:
    return f"{title}: {what}" if title else what


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
    return draw_confusion(counts, labels, titled(title, "confusion on the held-out fold"), path)


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
    ax.set_title(titled(title, "average precision per class"))
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_oof(scores: OOFScores, y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str],
             out_dir: Path, what: str = "with TTA") -> dict[str, Path]:
    """per_class_map3.png (sorted bars), per_fold_map3.png and confusion_matrix.png (top-1,
    row-normalised: the name a fold's run gives its own);
    ``what`` names the model in the titles (e.g. ``with TTA``, ``logreg``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    k = scores.k

    table = per_class_table(scores)
    values = table[f"map{k}"].fillna(0).to_numpy()
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.26 * len(table) + 1.8)))
    ax.barh(range(len(table)), values, color="tab:blue")
    for i, v in enumerate(values):
        ax.text(v + 0.01, i, f"{v:.2f}", va="center", fontsize=7)
    ax.set_yticks(range(len(table)), table["label"], fontsize=LABEL_FONTSIZE)
    ax.set_ylim(-0.6, len(table) - 0.4)
    ax.axvline(scores.overall, color="tab:red", ls="--")
    ax.set_xlim(0, 1.08)
    ax.set_xlabel(f"out-of-fold MAP@{k} of the class's clips "
                  f"(red line: all clips, {scores.overall:.3f})")
    ax.set_title(f"MAP@{k} per class, out of fold, {what}")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    paths["per_class_map3"] = out_dir / "per_class_map3.png"
    fig.savefig(paths["per_class_map3"], dpi=100)
    plt.close(fig)

    folds = [str(f) for f in scores.per_fold]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(folds) + 3), 4.5))
    bars = ax.bar(folds, list(scores.per_fold.values()), color="tab:green",
                  label=f"held-out fold's clips (MAP@{k})")
    ax.bar_label(bars, fmt="%.3f", fontsize=8, padding=2)
    ax.axhline(scores.overall, color="tab:red", ls="--",
               label=f"all clips: {scores.overall:.3f}")
    ax.set_ylim(0, 1.12)
    ax.set_xlabel("fold")
    ax.set_ylabel(f"out-of-fold MAP@{k}")
    ax.set_title(f"out-of-fold MAP@{k} per fold, {what}")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, -0.3), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    paths["per_fold_map3"] = out_dir / "per_fold_map3.png"
    fig.savefig(paths["per_fold_map3"], dpi=100)
    plt.close(fig)

    counts = confusion_counts(y_true, np.argmax(probs, axis=1), len(labels))
    paths["confusion_matrix"] = draw_confusion(counts, list(labels),
                                               f"out-of-fold confusion, {what}",
                                               out_dir / "confusion_matrix.png")
    return paths
