"""Test-time augmentation over many fold models at once: folds x lengths x crops, geometric mean.

The recipe scores every clip with K fold models x L crop lengths x C random crops and combines
the K*L*C softmax outputs by their geometric mean. Done clip by clip that is K*L*C tiny forward
passes per clip; here the crops of *all* clips are grouped by length, each length's views are
built once (one tensor of n_clips*C crops) and every fold model runs over that tensor in large
batches. The crop positions are drawn once per (clip, length, crop) and shared by the fold
models, so the tensor is built once per length rather than once per fold. Each clip's
positions derive from its own log-mel and the seed (:func:`clip_positions`), so a clip's
answer does not depend on what else is scored with it.

``members`` restricts a model to some clips (out-of-fold scoring: fold k's model scores only
fold k's clips); each clip's geometric mean is over the views of the models that scored it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fsd.config import EnsembleConfig
from fsd.model.inference import crop_offsets

# Softmax outputs can underflow to exactly 0 in float32; this floor keeps log() finite.
# Softmax outputs can underflow to exactly 0 in float32; this floor keeps log() finite
# without moving any probability that matters for ranking.
LOG_FLOOR = 1e-12
# One length's views are built in chunks of clips so a big test set never needs them all in RAM.
MAX_VIEW_BYTES = 256 * 2**20


def tta_lengths(cfg: EnsembleConfig, crop_min: int, crop_max: int) -> list[int]:
    """``cfg.tta_lengths`` when given, else ``tta_n_lengths`` equally spaced in [crop_min, crop_max].

    The recipe's six test lengths span the 25th..75th percentile of train lengths, ends included
    (263, 363, ..., 763), i.e. the training crop limits.
    """
    return spaced_lengths(cfg.tta_lengths, cfg.tta_n_lengths, crop_min, crop_max)


def spaced_lengths(fixed: Sequence[int], n: int, crop_min: int, crop_max: int) -> list[int]:
    """``fixed`` when given, else ``n`` lengths equally spaced in [crop_min, crop_max], ends
    included: TTA and validation score the crop lengths training draws."""
    if fixed:
        return [int(v) for v in fixed]
    if crop_min <= 0 or crop_max < crop_min:
        raise ValueError(f"cannot derive lengths from crop limits [{crop_min}, {crop_max}]")
    n = max(1, int(n))
    if n == 1:
        return [int(round((crop_min + crop_max) / 2))]
    return sorted({int(round(v)) for v in np.linspace(crop_min, crop_max, n)})


def clip_key(logmel: np.ndarray) -> int:
    """A 64-bit hash of a clip's log-mel (its shape and its values rounded to float16): what
    its crops derive from. Rounded, so the feature store's float16 copy of a clip and the same
    clip featurized afresh by the server (float32) get the same crops."""
    import hashlib

    m = np.ascontiguousarray(np.asarray(logmel).astype(np.float16))
    h = hashlib.blake2b(digest_size=8)
    h.update(np.asarray(m.shape, dtype=np.int64).tobytes())
    h.update(m.tobytes())
    return int.from_bytes(h.digest(), "little")


def clip_positions(key: int, length: int, crops: int, seed: int) -> np.ndarray:
    """One clip's crop positions in [0, 1) at one length, shape (crops,); NaN (the centre) when
    ``crops == 1``. A function of the clip (its :func:`clip_key`), the length, the seed and the
    number of crops only, so a clip gets the same views alone or in any batch, at any position
    in it, whatever other lengths are asked (more crops extend the same sequence)."""
    if crops == 1:
        return np.full(1, np.nan)
    words = [int(seed) & 0xFFFFFFFF, key & 0xFFFFFFFF, (key >> 32) & 0xFFFFFFFF, int(length)]
    return np.random.default_rng(words).random(crops)


def crop_positions(clips: Sequence[np.ndarray], lengths: Sequence[int], crops: int,
                   seed: int) -> np.ndarray:
    """Positions in [0, 1) of shape (len(lengths), n_clips, crops), each clip's from
    :func:`clip_positions` of its own content; NaN (the centre) when ``crops == 1``."""
    keys = [clip_key(m) for m in clips]
    out = np.empty((len(lengths), len(keys), crops))
    for li, length in enumerate(lengths):
        for i, k in enumerate(keys):
            out[li, i] = clip_positions(k, int(length), crops, seed)
    return out


def build_views(logmels: Sequence[np.ndarray], length: int, positions: np.ndarray,
                out: np.ndarray | None = None) -> np.ndarray:
    """(n_clips * crops, length, n_mels, 1) float32: each clip cropped (or zero-padded at the
    drawn offset) to ``length``, crops of one clip adjacent. ``positions`` is (n_clips, crops);
    NaN means the centre."""
    n, crops = positions.shape
    n_mels = logmels[0].shape[1]
    shape = (n * crops, length, n_mels, 1)
    if out is None or out.shape != shape:
        out = np.zeros(shape, dtype=np.float32)
    else:
        out[...] = 0.0
    frames = np.array([len(m) for m in logmels], dtype=np.int64)
    for c in range(crops):
        pos = positions[:, c]
        offsets = crop_offsets(frames, length, None if np.isnan(pos).all() else pos)
        for i, (m, f, o) in enumerate(zip(logmels, frames, offsets)):
            row = out[i * crops + c, :, :, 0]
            if f >= length:
                row[:] = m[o:o + length]
            else:
                row[o:o + f] = m
    return out


class ClipRows(Sequence):
    """Clips fetched on demand, e.g. ``ClipRows(store.logmel, rows)`` over a memory-mapped
    feature store: scoring thousands of clips then holds one chunk's log-mels, not all."""

    def __init__(self, fetch: Callable[[int], np.ndarray], rows: Sequence[int]):
        self._fetch = fetch
        self.rows = np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> np.ndarray:
        return self._fetch(int(self.rows[i]))


@dataclass
class TTAResult:
    """Summed log-probabilities and view counts per clip; :meth:`probs` is the geometric mean."""

    log_sum: np.ndarray  # (n_clips, n_classes) float64
    count: np.ndarray  # (n_clips,) views that scored each clip

    def probs(self) -> np.ndarray:
        return geometric_mean(self.log_sum, self.count)


def geometric_mean(log_sum: np.ndarray, count: np.ndarray) -> np.ndarray:
    """exp(mean log p), renormalised to sum to 1 per row (rows with no views stay uniform)."""
    count = np.asarray(count, dtype=np.float64).reshape(-1, 1)
    mean = np.asarray(log_sum, dtype=np.float64) / np.maximum(count, 1.0)
    mean = mean - mean.max(axis=1, keepdims=True)
    out = np.exp(mean)
    out /= out.sum(axis=1, keepdims=True)
    return out.astype(np.float32)


def geometric_mean_of(probs: Sequence[np.ndarray]) -> np.ndarray:
    """The geometric mean of several (n, classes) probability arrays, renormalised."""
    stack = np.log(np.maximum(np.stack([np.asarray(p, np.float64) for p in probs]), LOG_FLOOR))
    return geometric_mean(stack.sum(axis=0), np.full(stack.shape[1], len(probs)))


def _forward(model, views: np.ndarray, pca: np.ndarray | None, batch_size: int) -> np.ndarray:
    """Softmax outputs for all ``views`` in batches; predict_on_batch keeps Keras' compiled
    predict step (one trace per shape, relaxed by reduce_retracing) without model.predict's
    per-call dataset and callback set-up, which dominates for small requests."""
    n = len(views)
    outs = []
    for start in range(0, n, batch_size):
        x = views[start:start + batch_size]
        inputs = x if pca is None else [x, pca[start:start + batch_size]]
        outs.append(np.asarray(model.predict_on_batch(inputs)))
    return np.concatenate(outs, axis=0)


def predict_ensemble(
    models: Sequence, logmels: Sequence[np.ndarray], pcas: Sequence[np.ndarray | None],
    lengths: Sequence[int], crops: int, seed: int = 0, batch_size: int = 256,
    members: Sequence[np.ndarray | None] | None = None, max_view_bytes: int = MAX_VIEW_BYTES,
) -> TTAResult:
    """Score ``logmels`` with every model x length x crop; returns the log-prob sums.

    ``pcas[k]`` is model k's PCA input for all clips (None for a log-mel-only model);
    ``members[k]`` the clip indices model k scores (None: all). ``logmels`` may be lazy
    (:class:`ClipRows`): views are built a chunk of clips at a time.
    """
    n = len(logmels)
    if n == 0:
        raise ValueError("no clips to score")
    if not lengths or min(lengths) <= 0 or crops < 1:
        raise ValueError(f"need positive lengths and crops >= 1, got {list(lengths)}, {crops}")
    if len(pcas) != len(models):
        raise ValueError(f"{len(models)} models but {len(pcas)} PCA inputs")
    members = list(members) if members is not None else [None] * len(models)
    sets = [np.arange(n) if m is None else np.asarray(m, dtype=np.int64) for m in members]
    n_mels = np.shape(logmels[0])[1]
    keys: dict[int, int] = {}  # clip -> clip_key, computed when the clip is first fetched
    log_sum: np.ndarray | None = None
    count = np.zeros(n, dtype=np.int64)
    for li, length in enumerate(lengths):
        per_clip = crops * length * n_mels * 4
        chunk = max(1, min(n, max_view_bytes // max(per_clip, 1)))
        buf: np.ndarray | None = None
        for start in range(0, n, chunk):
            idx = np.arange(start, min(start + chunk, n))
            wanted = [s[(s >= idx[0]) & (s <= idx[-1])] for s in sets]
            if not any(len(w) for w in wanted):
                continue
            # only clips some model scores need views
            need = np.unique(np.concatenate(wanted))
            clips = [logmels[i] for i in need]
            for i, m in zip(need, clips):
                if int(i) not in keys:
                    keys[int(i)] = clip_key(m)
            positions = np.stack([clip_positions(keys[int(i)], int(length), crops, seed)
                                  for i in need])
            buf = build_views(clips, length, positions,
                              out=buf if buf is not None and len(need) * crops == len(buf) else None)
            where = {int(c): j for j, c in enumerate(need)}
            for model, pca, w in zip(models, pcas, wanted):
                if not len(w):
                    continue
                rows = (np.array([where[int(c)] for c in w])[:, None] * crops
                        + np.arange(crops)[None, :]).reshape(-1)
                views = buf if len(rows) == len(buf) else buf[rows]
                p_in = None if pca is None else np.repeat(np.asarray(pca, np.float32)[w], crops, axis=0)
                probs = _forward(model, views, p_in, batch_size)
                logp = np.log(np.maximum(probs.astype(np.float64), LOG_FLOOR))
                if log_sum is None:
                    log_sum = np.zeros((n, logp.shape[1]), dtype=np.float64)
                np.add.at(log_sum, w, logp.reshape(len(w), crops, -1).sum(axis=1))
                count[w] += crops
    if log_sum is None:
        raise ValueError("no model scored any clip (empty members)")
    return TTAResult(log_sum=log_sum, count=count)
