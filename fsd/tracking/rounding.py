"""Figures as they are logged: rounded to what they can resolve, so the UI shows 0.9615, not
0.9615384615384616. Every metric ``fsd`` logs, and every timing it logs as a param, goes
through :func:`rounded`."""

from __future__ import annotations

import math

# A score (a mean over clips, a weight in [0, 1]): MAP@3 on n clips moves in steps of
# 1/(3n), so 4 decimals resolve it for up to a few thousand clips.
SCORE_DECIMALS = 4
# Anything else (a throughput, a duration, a loss, a learning rate): 3 significant digits.
SIGNIFICANT = 3
_SCORE_WORDS = ("map", "accuracy", "_ap", "ap_", "weight", "auc", "f1")


def is_score(key: str) -> bool:
    """Whether metric ``key`` names a score (MAP@k, accuracy, AP, a blend weight)."""
    name = key.rsplit("/", 1)[-1].lower()
    return any(w in name for w in _SCORE_WORDS) and "loss" not in name


def rounded(key: str, value: float) -> float:
    """``value`` of metric ``key``, rounded: a score to 4 decimals, any other figure to 3
    significant digits. NaN and infinities pass as they are."""
    v = float(value)
    if not math.isfinite(v) or v == 0:
        return v
    if is_score(key):
        return round(v, SCORE_DECIMALS)
    return round(v, SIGNIFICANT - 1 - math.floor(math.log10(abs(v))))


def rounded_all(metrics: dict[str, float]) -> dict[str, float]:
    """Every value of ``metrics`` through :func:`rounded`."""
    return {k: rounded(k, v) for k, v in metrics.items()}


def figure_text(key: str, value: float) -> str:
    """A rounded figure as a param's text (``'162'``, ``'0.9615'``, ``'3.25e-05'``)."""
    return f"{rounded(key, value):.{SCORE_DECIMALS}f}".rstrip("0").rstrip(".") \
        if is_score(key) else f"{rounded(key, value):.{SIGNIFICANT}g}"
