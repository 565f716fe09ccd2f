"""A long recording's windows as a picture: labels over time, score as intensity.

One row per label that tops some window (then the next best labels, up to ``max_rows``), time
on the x axis in the file's own seconds (mm:ss past a minute); each window paints the span
nearest its centre with its score for that label, the top label of each window is marked with
a dot, and silent spans are hatched grey. Read it as: where a row is dark, that sound is there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def plot_timeline(starts: np.ndarray, ends: np.ndarray, probs: np.ndarray,
                  labels: Sequence[str], seconds: float, path: str | Path, title: str = "",
                  max_rows: int = 12) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    starts, ends = np.asarray(starts, float), np.asarray(ends, float)
    probs = np.asarray(probs, float)
    silent = np.isnan(probs).all(axis=1) if probs.size else np.zeros(len(starts), bool)
    filled = np.where(np.isnan(probs), 0.0, probs)
    top = filled.argmax(axis=1)
    rows = list(dict.fromkeys(int(t) for t, s in zip(top, silent) if not s))
    rows.sort(key=lambda c: -filled[:, c].sum())
    if len(rows) < max_rows:
        rest = [int(c) for c in np.argsort(-filled.max(axis=0)) if int(c) not in rows]
        rows += rest[:max(0, min(max_rows, len(labels)) - len(rows))]
    rows = rows[:max(max_rows, 1)] if len(rows) > max_rows else rows
    centres = (starts + ends) / 2
    order = np.argsort(centres, kind="stable")
    c = centres[order]
    edges = np.concatenate([[0.0], (c[1:] + c[:-1]) / 2, [max(seconds, c[-1])]]) if len(c) \
        else np.array([0.0, seconds])
    grid = filled[order][:, rows].T  # (rows, windows)
    height = 1.2 + 0.32 * len(rows)
    fig, ax = plt.subplots(figsize=(11, height))
    mesh = ax.pcolormesh(edges, np.arange(len(rows) + 1), grid, cmap="Blues", vmin=0, vmax=1,
                         shading="flat")
    marks = len(order) <= 150  # dots; beyond that, a thin red bar over each top label's span
    for j, w in enumerate(order):
        if silent[w]:
            ax.axvspan(edges[j], edges[j + 1], facecolor="0.9", edgecolor="0.6", hatch="//",
                       lw=0, zorder=2)
        elif top[w] in rows:
            y = rows.index(int(top[w])) + 0.5
            if marks:
                ax.plot(c[j], y, "o", ms=3.5, color="#d62728", zorder=3)
            else:
                ax.plot([edges[j], edges[j + 1]], [y, y], "-", lw=1.5, color="#d62728",
                        zorder=3, solid_capstyle="butt")
    ax.set_yticks(np.arange(len(rows)) + 0.5)
    ax.set_yticklabels([labels[r] for r in rows])
    ax.set_ylim(len(rows), 0)
    ax.set_xlim(0, max(seconds, 1e-3))
    if seconds > 90:
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{int(v) // 60}:{int(v) % 60:02d}"))
        ax.set_xlabel("time (m:ss)")
    else:
        ax.set_xlabel("time (s)")
    ax.set_title(title or "labels over time", loc="left")
    cbar = fig.colorbar(mesh, ax=ax, pad=0.01, fraction=0.03)
    cbar.set_label("score")
    ax.plot([], [], "o" if marks else "-", ms=3.5, color="#d62728",
            label="top label of the window")
    if silent.any():
        ax.fill_between([], [], facecolor="0.9", edgecolor="0.6", hatch="//", label="silence")
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2,
              frameon=False, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
