"""Training batches: random-length crops, augmentation, mixup, sample weights.

:class:`TrainBatches` is a ``keras.utils.PyDataset`` whose batch ``i`` of epoch ``e`` is a pure
function of ``(seed, stream, e, i)``: any worker may build any batch, and a resumed run sees
the very batches an uninterrupted one would. :func:`prefetch` builds them on a background
thread so the numpy work overlaps the training step.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import keras
import numpy as np
import pandas as pd

from fsd.config import TrainConfig
from fsd.model.inference import crop_offsets
from fsd.train.augment import apply_time_index, mixup, random_erase, shift_flip_index, spec_augment

log = logging.getLogger(__name__)


class FeatureSource(Protocol):
    """What training needs from a feature store (``fsd.features.store.FeatureStore``)."""

    index: pd.DataFrame  # fname, label, label_id, fold, verified, offset, frames, seconds
    labels: list[str]
    meta: dict

    def logmel(self, i: int) -> np.ndarray: ...

    @property
    def summary(self) -> np.ndarray: ...


@dataclass
class MemoryStore:
    """A feature store held in memory (benchmarks, tests, callers that already hold features).

    Same attributes as ``FeatureStore``: ``index``, ``labels``, ``meta``, ``logmel(i)``,
    ``summary``.
    """

    index: pd.DataFrame
    labels: list[str]
    logmels: list[np.ndarray]
    summary: np.ndarray
    meta: dict = field(default_factory=dict)

    def logmel(self, i: int) -> np.ndarray:
        return self.logmels[i]

    @classmethod
    def random(cls, n_clips: int = 64, n_classes: int = 4, n_folds: int = 2,
               frames: tuple[int, int] = (50, 1000), n_mels: int = 64,
               summary_dim: int = 1133, seed: int = 0) -> MemoryStore:
        """Random clips with lengths log-uniform in ``frames`` and a weak class signal."""
        rng = np.random.default_rng(seed)
        label_id = np.arange(n_clips) % n_classes
        lengths = np.exp(rng.uniform(np.log(frames[0]), np.log(frames[1]), n_clips)).astype(int)
        logmels = []
        for n, c in zip(lengths, label_id):
            m = rng.random((n, n_mels), dtype=np.float32) * 0.5
            m[:, (c * 7) % n_mels] += 0.5  # a class-dependent band, so training can learn
            logmels.append(m)
        labels = [f"class_{c}" for c in range(n_classes)]
        index = pd.DataFrame({
            "fname": [f"clip_{i:04d}.wav" for i in range(n_clips)],
            "label": [labels[c] for c in label_id],
            "label_id": label_id,
            "fold": rng.permutation(n_clips) % n_folds,
            "verified": rng.random(n_clips) < 0.6,
            "offset": np.concatenate([[0], np.cumsum(lengths)[:-1]]),
            "frames": lengths,
            "seconds": lengths * 220 / 22050,
        })
        summary = rng.normal(size=(n_clips, summary_dim)).astype(np.float32)
        summary[:, 0] += label_id
        lo, hi = np.percentile(lengths, [25, 75])
        return cls(index, labels, logmels, summary,
                   meta={"crop_min": int(lo), "crop_max": int(hi)})


def resolve_crop_limits(train_cfg: TrainConfig, meta: dict, frames: np.ndarray) -> tuple[int, int]:
    """``[crop_min, crop_max)`` in frames: config values, else the store's derived percentiles
    (else the 25th/75th percentile of ``frames``)."""
    lo, hi = train_cfg.crop_min, train_cfg.crop_max
    if not lo:
        lo = int(meta.get("crop_min") or np.percentile(frames, 25))
    if not hi:
        hi = int(meta.get("crop_max") or np.percentile(frames, 75))
    lo = max(1, int(lo))
    hi = max(lo + 1, int(hi))
    return lo, hi


def crop_lengths(crop_min: int, crop_max: int, bucket: int) -> np.ndarray:
    """Every crop length a batch can have: multiples of ``bucket`` within [crop_min, crop_max),
    or every integer there when the range is narrower than one bucket."""
    if bucket > 1:
        first = -(-crop_min // bucket) * bucket
        grid = np.arange(first, crop_max, bucket)
        if grid.size:
            return grid
    return np.arange(crop_min, crop_max)


def draw_crop_length(rng: np.random.Generator, crop_min: int, crop_max: int, bucket: int) -> int:
    """One of :func:`crop_lengths`, uniformly: a uniform length in [crop_min, crop_max) on a
    ``bucket``-frame grid. (Rounding a uniform integer to the grid instead would over-weight
    the last grid point, which also collects the lengths above it.)"""
    allowed = crop_lengths(crop_min, crop_max, bucket)
    return int(allowed[rng.integers(0, len(allowed))])


def balanced_class_weights(label_ids: np.ndarray, n_classes: int) -> np.ndarray:
    """sklearn's "balanced" weights, n / (classes * count); 0 for classes absent from training."""
    counts = np.bincount(label_ids, minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes)
    weights[present] = len(label_ids) / (present.sum() * counts[present])
    return weights


def sample_weights(label_ids: np.ndarray, verified: np.ndarray, n_classes: int,
                   class_weights: bool, unverified_weight: float) -> np.ndarray:
    """Per-clip loss weights: class weight (optional) x ``unverified_weight`` for unverified."""
    w = np.ones(len(label_ids), dtype=np.float32)
    if class_weights:
        w *= balanced_class_weights(label_ids, n_classes)[label_ids].astype(np.float32)
    w[~np.asarray(verified, dtype=bool)] *= np.float32(unverified_weight)
    return w


@dataclass
class Batch:
    """One training batch: x (B, L, mels, 1), y (B, classes), w (B,), pca (B, d) or None."""

    x: np.ndarray
    y: np.ndarray
    w: np.ndarray
    pca: np.ndarray | None = None

    @property
    def inputs(self) -> np.ndarray | list[np.ndarray]:
        return self.x if self.pca is None else [self.x, self.pca]


class TrainBatches(keras.utils.PyDataset):
    """Augmented, mixed-up batches of a stage, addressable by (epoch, step).

    ``rows``: store rows to train on; ``pca``: their PCA vectors (aligned with ``rows``) for
    stage 2, else None. Every batch has ``batch_size`` clips (an epoch's order wraps around)
    so the batch dimension never changes; the crop length is drawn per batch.

    ``train_fold`` consumes it through :func:`prefetch` and ``train_on_batch``. Passing it to
    ``model.fit`` works only when every batch has one crop length: Keras fixes the input
    signature from the first batches it sees.
    """

    def __init__(self, store: FeatureSource, rows: np.ndarray, train_cfg: TrainConfig,
                 crop: tuple[int, int], mixup_alpha: float, pca: np.ndarray | None = None,
                 seed: int = 0, stream: int = 0, steps_per_epoch: int = 0, epoch: int = 0,
                 n_classes: int | None = None, targets: np.ndarray | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.store = store
        self.rows = np.asarray(rows, dtype=np.int64)
        if self.rows.size == 0:
            raise ValueError("no training clips")
        if pca is not None and len(pca) != len(self.rows):
            raise ValueError(f"{len(self.rows)} rows but {len(pca)} PCA vectors")
        self.cfg = train_cfg
        self.crop_min, self.crop_max = crop
        self.alpha = float(mixup_alpha)
        self.pca = None if pca is None else np.asarray(pca, dtype=np.float32)
        self.seed, self.stream = int(seed), int(stream)
        self.batch_size = int(train_cfg.batch_size)
        self.steps = int(steps_per_epoch or max(math.ceil(len(self.rows) / self.batch_size),
                                                train_cfg.min_steps_per_epoch))
        self.epoch = int(epoch)
        idx = store.index
        self.label_ids = idx["label_id"].to_numpy(np.int64)[self.rows]
        self.frames = idx["frames"].to_numpy(np.int64)[self.rows]
        # A memory-mapped store (FeatureStore.logmel_rows): each crop is read straight from
        # the map, only its frames converted to float32, instead of copying the whole clip.
        self._mm = getattr(store, "logmel_rows", None)
        self._offsets = (idx["offset"].to_numpy(np.int64)[self.rows]
                         if self._mm is not None else None)
        self.n_classes = int(n_classes or len(store.labels))
        # soft targets (a distilled student's: fsd.distill.targets), one row per training row;
        # None: the one-hot labels. Mixup mixes them like labels.
        self.targets = None if targets is None else np.asarray(targets, dtype=np.float32)
        if self.targets is not None and self.targets.shape != (len(self.rows), self.n_classes):
            raise ValueError(f"targets must be ({len(self.rows)}, {self.n_classes}), got "
                             f"{self.targets.shape}")
        self.weights = sample_weights(self.label_ids, idx["verified"].to_numpy(bool)[self.rows],
                                      self.n_classes, train_cfg.class_weights,
                                      train_cfg.unverified_weight)
        self.shapes: set[tuple[int, ...]] = set()
        self._order_cache: tuple[int, np.ndarray] | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.steps

    def on_epoch_end(self) -> None:
        self.epoch += 1

    @property
    def crop_lengths(self) -> np.ndarray:
        return crop_lengths(self.crop_min, self.crop_max, self.cfg.crop_bucket)

    def _order(self, epoch: int) -> np.ndarray:
        """Positions into ``rows`` for a whole epoch: shuffled passes, wrapped to fill it."""
        with self._lock:
            if self._order_cache is None or self._order_cache[0] != epoch:
                rng = np.random.default_rng([self.seed, self.stream, epoch])
                need = self.steps * self.batch_size
                passes = -(-need // len(self.rows))
                order = np.concatenate([rng.permutation(len(self.rows)) for _ in range(passes)])
                self._order_cache = (epoch, order[:need])
            return self._order_cache[1]

    def batch(self, step: int, epoch: int | None = None) -> Batch:
        """Batch ``step`` of ``epoch`` (default: the current epoch)."""
        epoch = self.epoch if epoch is None else epoch
        if not 0 <= step < self.steps:
            raise IndexError(step)
        pos = self._order(epoch)[step * self.batch_size:(step + 1) * self.batch_size]
        rng = np.random.default_rng([self.seed, self.stream, epoch, step, 1])
        cfg = self.cfg
        length = draw_crop_length(rng, self.crop_min, self.crop_max, cfg.crop_bucket)
        b = len(pos)
        offsets = crop_offsets(self.frames[pos], length, rng.random(b))
        if self._mm is not None:
            mm = self._mm
            x = np.zeros((b, length, mm.shape[1]), dtype=np.float32)
            for j, p in enumerate(pos):
                n, start = int(self.frames[p]), int(self._offsets[p])
                o = int(offsets[j])
                if n >= length:  # a window of the clip
                    x[j] = mm[start + o:start + o + length]
                else:  # the whole clip, at offset o of the crop
                    x[j, o:o + n] = mm[start:start + n]
        else:
            first = self.store.logmel(int(self.rows[pos[0]]))
            x = np.zeros((b, length, first.shape[1]), dtype=np.float32)
            for j, p in enumerate(pos):
                m = first if j == 0 else self.store.logmel(int(self.rows[p]))
                n = len(m)
                if n >= length:
                    x[j] = m[offsets[j]:offsets[j] + length]
                else:
                    x[j, offsets[j]:offsets[j] + n] = m
        if cfg.time_shift > 0 or cfg.flip_prob > 0:
            x = apply_time_index(x, shift_flip_index(b, length, cfg.time_shift, cfg.flip_prob, rng))
        if cfg.erase_prob > 0:
            random_erase(x, cfg.erase_prob, (cfg.erase_area_min, cfg.erase_area_max),
                         (cfg.erase_aspect_min, cfg.erase_aspect_max), rng)
        if cfg.freq_masks or cfg.time_masks:
            spec_augment(x, cfg.freq_masks, cfg.freq_mask_max, cfg.time_masks,
                         int(cfg.time_mask_max * length), rng)
        if self.targets is not None:
            y = self.targets[pos].copy()
        else:
            y = np.zeros((b, self.n_classes), dtype=np.float32)
            y[np.arange(b), self.label_ids[pos]] = 1.0
        w = self.weights[pos]
        pca = None if self.pca is None else self.pca[pos]
        (x, pca, y, w), _ = mixup([x, pca, y, w], self.alpha, rng)
        x = x[..., None]
        self.shapes.add(x.shape)
        return Batch(x, y, w, pca)

    def __getitem__(self, step: int) -> tuple[Any, np.ndarray, np.ndarray]:
        bt = self.batch(step)
        return bt.inputs, bt.y, bt.w


def prefetch(ds: TrainBatches, epoch: int, start: int = 0, depth: int = 3) -> Iterator[Batch]:
    """Yield batches ``start..len(ds)-1`` of ``epoch``, built ``depth`` ahead on a thread.

    numpy releases the GIL in the heavy copies, so building overlaps the training step.
    An exception while building is re-raised in the consumer; leaving the loop early stops
    the thread.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for step in range(start, len(ds)):
                if stop.is_set() or not put(ds.batch(step, epoch)):
                    return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(exc)
            return
        put(done)

    thread = threading.Thread(target=produce, name="fsd-batches", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def load_clips(store: FeatureSource, rows: Sequence[int]) -> list[np.ndarray]:
    """Log-mels of ``rows`` as float32 arrays (validation keeps them in memory)."""
    return [np.asarray(store.logmel(int(i)), dtype=np.float32) for i in rows]
