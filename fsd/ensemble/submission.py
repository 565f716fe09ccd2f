"""The Kaggle submission: every test clip, three space-separated labels, scored where labelled.

Kaggle's file lists every test clip, including the ones that cannot be decoded (FSDKaggle2018
has three empty test files). A clip without features gets the training class prior's top
labels: the best guess without audio, and what keeps the file complete.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from fsd.evaluation.metrics import top_k_labels

SCORED_USAGES = ("Public", "Private")


def class_prior(label_ids: Sequence[int], n_classes: int) -> np.ndarray:
    """Training label frequencies (add-one smoothed so every class has some mass)."""
    counts = np.bincount(np.asarray(label_ids, dtype=np.int64), minlength=n_classes)[:n_classes]
    counts = counts.astype(np.float64) + 1.0
    return (counts / counts.sum()).astype(np.float32)


def build_submission(
    all_fnames: Sequence[str], scored_fnames: Sequence[str], probs: np.ndarray,
    labels: Sequence[str], prior: np.ndarray, k: int = 3,
) -> pd.DataFrame:
    """fname, label ("a b c") for every name in ``all_fnames`` (kept in that order).

    ``probs`` rows belong to ``scored_fnames``; names without a row get the prior's top ``k``.
    Names in ``scored_fnames`` but not in ``all_fnames`` are added at the end, so a clip the
    store has is never dropped.
    """
    if len(scored_fnames) != len(probs):
        raise ValueError(f"{len(scored_fnames)} scored names but {len(probs)} probability rows")
    if len(labels) < k:
        raise ValueError(f"need at least {k} labels for a top-{k} submission, have {len(labels)}")
    by_name = dict(zip(map(str, scored_fnames), top_k_labels(probs, labels, k))) if len(probs) else {}
    fallback = top_k_labels(np.asarray(prior)[None, :], labels, k)[0]
    names = list(dict.fromkeys(map(str, all_fnames)))
    seen = set(names)
    names += [f for f in map(str, scored_fnames) if f not in seen]
    rows = [(f, " ".join(by_name.get(f, fallback))) for f in names]
    return pd.DataFrame(rows, columns=["fname", "label"])


def validate_submission(sub: pd.DataFrame, expected_fnames: Sequence[str], labels: Sequence[str],
                        k: int = 3) -> None:
    """Raise ValueError unless ``sub`` lists exactly ``expected_fnames`` once each, with ``k``
    distinct known labels per clip."""
    if list(sub.columns) != ["fname", "label"]:
        raise ValueError(f"columns must be ['fname', 'label'], got {list(sub.columns)}")
    if sub["fname"].duplicated().any():
        raise ValueError(f"duplicate fnames: {sub['fname'][sub['fname'].duplicated()].tolist()[:5]}")
    missing = set(map(str, expected_fnames)) - set(sub["fname"])
    if missing:
        raise ValueError(f"{len(missing)} test clips missing, e.g. {sorted(missing)[:5]}")
    known = set(labels)
    for fname, text in zip(sub["fname"], sub["label"]):
        parts = str(text).split(" ")
        if len(parts) != k or len(set(parts)) != k or not set(parts) <= known:
            raise ValueError(f"{fname}: expected {k} distinct known labels, got {text!r}")


def map_at_k_labels(predicted: Sequence[Sequence[str]], truth: Sequence[str], k: int = 3) -> float:
    """Kaggle's MAP@k on label names: 1/rank of the true label among the first ``k``, else 0."""
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions for {len(truth)} labels")
    if not len(truth):
        return float("nan")
    total = 0.0
    for pred, true in zip(predicted, truth):
        for rank, p in enumerate(list(pred)[:k], start=1):
            if p == true:
                total += 1.0 / rank
                break
    return total / len(truth)


def score_submission(sub: pd.DataFrame, test: pd.DataFrame, k: int = 3) -> dict[str, float]:
    """MAP@k of ``sub`` against ``test`` (fname, label[, usage]) where labels are known.

    Returns ``test_map3`` over every labelled clip and, with a ``usage`` column,
    ``public_map3`` / ``private_map3`` (Kaggle's split; ``Ignored`` clips are not scored).
    Counts come back as ``n_scored``, ``n_public``, ``n_private``. Empty when nothing is labelled.
    """
    if "label" not in test.columns:
        return {}
    truth = test[["fname", "label"] + (["usage"] if "usage" in test.columns else [])].copy()
    truth["fname"] = truth["fname"].astype(str)
    truth["label"] = truth["label"].fillna("").astype(str).str.strip()
    truth = truth[truth["label"] != ""]
    if "usage" in truth.columns:
        usage = truth["usage"].fillna("").astype(str).str.strip()
        # Kaggle scored only Public and Private; a metadata file without usage values scores all
        if (usage != "").any():
            truth = truth[usage.isin(SCORED_USAGES + ("",))]
    if truth.empty:
        return {}
    pred = dict(zip(sub["fname"].astype(str), sub["label"].astype(str).str.split(" ")))
    lists = [pred.get(f, []) for f in truth["fname"]]
    out = {"test_map3": map_at_k_labels(lists, truth["label"].tolist(), k),
           "n_scored": float(len(truth))}
    if "usage" in truth.columns:
        for usage in SCORED_USAGES:
            sel = (truth["usage"].astype(str).str.strip() == usage).to_numpy()
            if sel.any():
                out[f"{usage.lower()}_map3"] = map_at_k_labels(
                    [lists[i] for i in np.flatnonzero(sel)], truth["label"][sel].tolist(), k)
                out[f"n_{usage.lower()}"] = float(sel.sum())
    return out
