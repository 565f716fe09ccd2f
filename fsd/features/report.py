"""Plots of the featurize stage (matplotlib's Agg canvas; no pyplot, no global backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _figure(width: float = 7.0, height: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_lengths(frames: np.ndarray, crop_min: int, crop_max: int, path: str | Path,
                 hop_seconds: float, title: str = "train clip lengths") -> Path:
    """Histogram of clip lengths (frames) with the crop limits [crop_min, crop_max) marked."""
    frames = np.asarray(frames, dtype=np.float64)
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    if frames.size:
        bins = min(60, max(10, int(np.sqrt(frames.size))))
        ax.hist(frames, bins=bins, color="#4c72b0", alpha=0.85)
    for x, name in ((crop_min, "crop_min (p25)"), (crop_max, "crop_max (p75)")):
        ax.axvline(x, color="#c44e52", linestyle="--", linewidth=1.5)
        ax.annotate(f"{name} = {x} ({x * hop_seconds:.2f} s)", xy=(x, 1), xycoords=("data", "axes fraction"),
                    xytext=(3, -12), textcoords="offset points", fontsize=8, color="#c44e52",
                    rotation=90, va="top")
    ax.set_xlabel(f"log-mel frames ({hop_seconds * 1000:.0f} ms each)")
    ax.set_ylabel("clips")
    ax.set_title(f"{title} (n={frames.size})")
    secax = ax.secondary_xaxis("top", functions=(lambda f: f * hop_seconds,
                                                 lambda s: s / hop_seconds))
    secax.set_xlabel("seconds")
    return _save(fig, path)


def plot_pca_variance(ratio: np.ndarray, n_components: float, path: str | Path,
                      title: str = "PCA of the summary features (all train clips)") -> Path:
    """Cumulative explained variance against components, with the configured choice marked."""
    ratio = np.asarray(ratio, dtype=np.float64)
    cum = np.cumsum(ratio)
    k = np.arange(1, len(cum) + 1)
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(k, cum, color="#4c72b0")
    if n_components >= 1:
        chosen = int(min(n_components, len(cum)))
    else:
        chosen = int(np.searchsorted(cum, n_components) + 1) if len(cum) else 0
        chosen = min(chosen, len(cum))
    if chosen:
        ax.axvline(chosen, color="#c44e52", linestyle="--", linewidth=1.2)
        ax.annotate(f"{chosen} components: {cum[chosen - 1]:.1%}", xy=(chosen, cum[chosen - 1]),
                    xytext=(6, -14), textcoords="offset points", fontsize=8, color="#c44e52")
    ax.axhline(0.97, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("components")
    ax.set_ylabel("cumulative explained variance")
    ax.set_ylim(0, 1.01)
    ax.set_title(title)
    return _save(fig, path)
