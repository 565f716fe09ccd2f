"""Fixed-length crops and test-time augmentation (lengths x crops, geometric mean)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Softmax outputs can underflow to exactly 0 in float32; this floor keeps log() finite
# without moving any probability that matters for ranking.
_LOG_FLOOR = 1e-12


def crop_offsets(frames: np.ndarray, length: int, position: np.ndarray | None) -> np.ndarray:
    """Start offsets for fitting clips of ``frames`` into ``length``.

    For a clip at least ``length`` long the offset is where the crop starts; for a shorter one
    it is where the clip is placed inside the zero-padded window. ``position`` in [0, 1) picks
    uniformly among the ``|frames - length| + 1`` choices; ``None`` takes the centre.
    """
    slack = np.abs(np.asarray(frames, dtype=np.int64) - length)
    if position is None:
        return slack // 2
    return np.minimum((np.asarray(position) * (slack + 1)).astype(np.int64), slack)


def fit_length(x: np.ndarray, length: int, offset: int, out: np.ndarray | None = None) -> np.ndarray:
    """Crop (``len(x) >= length``) or zero-pad (shorter) ``x`` (frames, mels) to ``length``."""
    if out is None:
        out = np.zeros((length,) + x.shape[1:], dtype=np.float32)
    else:
        out[...] = 0.0
    n = len(x)
    if n >= length:
        out[:] = x[offset:offset + length]
    else:
        out[offset:offset + n] = x
    return out


def _inputs(model, x: np.ndarray, pca: np.ndarray | None):
    n_inputs = len(model.inputs)
    if n_inputs == 2:
        if pca is None:
            raise ValueError("this model takes a PCA vector; pass pca=")
        return [x, pca]
    if pca is not None:
        raise ValueError("this model takes log-mel only; pass pca=None")
    return x


def predict_tta(model, logmels: Sequence[np.ndarray], pca: np.ndarray | None,
                lengths: Sequence[int], crops: int = 1, seed: int = 0,
                batch_size: int = 64) -> np.ndarray:
    """Class probabilities (n, classes): geometric mean over ``lengths`` x ``crops`` views.

    ``crops=1`` takes the centre crop (or centred padding) at each length; ``crops>1`` draws
    random offsets from ``seed``. Clips are batched across the list; every batch has the same
    size (the last one is padded and the padding discarded) so that backends that compile per
    shape compile once per length. The geometric mean is taken in log space and renormalised
    to sum to 1.
    """
    n = len(logmels)
    if n == 0:
        raise ValueError("predict_tta needs at least one clip")
    if not lengths or min(lengths) <= 0 or crops < 1:
        raise ValueError(f"need positive lengths and crops >= 1, got {lengths}, {crops}")
    if pca is not None and len(pca) != n:
        raise ValueError(f"{n} log-mels but {len(pca)} PCA vectors")
    frames = np.array([len(m) for m in logmels])
    n_mels = logmels[0].shape[1]
    bs = max(1, min(batch_size, n))
    rng = np.random.default_rng(seed)
    log_sum: np.ndarray | None = None
    for length in lengths:
        buf = np.zeros((bs, length, n_mels, 1), dtype=np.float32)
        for _ in range(crops):
            offsets = crop_offsets(frames, length, None if crops == 1 else rng.random(n))
            for start in range(0, n, bs):
                idx = np.arange(start, min(start + bs, n))
                for j, i in enumerate(idx):
                    fit_length(np.asarray(logmels[i], dtype=np.float32), length, offsets[i],
                               out=buf[j, :, :, 0])
                buf[len(idx):] = 0.0
                p_batch = None
                if pca is not None:
                    p_batch = np.zeros((bs, pca.shape[1]), dtype=np.float32)
                    p_batch[:len(idx)] = pca[idx]
                probs = np.asarray(model.predict_on_batch(_inputs(model, buf, p_batch)))
                logp = np.log(np.maximum(probs[:len(idx)].astype(np.float64), _LOG_FLOOR))
                if log_sum is None:
                    log_sum = np.zeros((n, logp.shape[1]), dtype=np.float64)
                log_sum[idx] += logp
    mean = log_sum / (len(lengths) * crops)
    mean -= mean.max(axis=1, keepdims=True)
    out = np.exp(mean)
    out /= out.sum(axis=1, keepdims=True)
    return out.astype(np.float32)
