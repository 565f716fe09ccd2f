"""Training a student, and scoring it honestly out of fold (no MLflow).

A student is the stage-1 network (log-mel only: :func:`fsd.model.networks.build_network`
without a PCA input) trained on soft targets (:mod:`fsd.distill.targets`) with the fold
training's own pieces: its batches and augmentation (:class:`fsd.train.batches.TrainBatches`,
which mixes the soft targets like labels), its epoch loop (:func:`fsd.train.fit.run_epoch`) and
its schedule (:func:`fsd.train.schedule.stage_phases`, ``distill.schedule``).

A student has no validation fold to pick its epoch on (the honest one must not see its scoring
fold's labels, the served one trains on every clip): it keeps its last weights, and each phase
runs its full ``*_epochs`` (no plateau early stop). Both are the same code, so the honest score
measures the procedure that makes the served student.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import keras
import numpy as np

from fsd.config import Config
from fsd.distill.targets import fold_teacher_rows, mix_targets, unlabeled_rows
from fsd.evaluation.oof import OOFScores, score_oof
from fsd.model.networks import build_network, set_input_statistics
from fsd.model.tta import ClipRows, predict_ensemble, spaced_lengths, tta_lengths
from fsd.train.batches import FeatureSource, TrainBatches, resolve_crop_limits
from fsd.train.fit import compile_network, run_epoch
from fsd.train.schedule import stage_phases

log = logging.getLogger(__name__)


@dataclass
class StudentOOF:
    """The honest score: each fold's clips predicted by the student that learned from that
    fold's own teacher on the other folds' clips."""

    probs: np.ndarray  # (clips scored, classes), rows of ``rows``
    rows: np.ndarray  # store rows scored
    scores: OOFScores
    seconds: float
    # the same students scored with the teacher's TTA (``ensemble.tta_*``), beside the score
    # at their own: what more forward passes per clip would buy (None: the two TTAs agree)
    at_teacher_tta: OOFScores | None = None


@dataclass
class Student:
    """A trained student and the crop limits it trained on (what TTA scores it at)."""

    model: keras.Model
    crop: tuple[int, int]


def student_config(cfg: Config) -> Config:
    """``cfg`` with the student's network width (``distill.width``) in ``model``."""
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, width=cfg.distill.width))


def train_student(cfg: Config, store: FeatureSource, rows: np.ndarray, targets: np.ndarray,
                  stream: int = 0, run_eagerly: bool = False) -> Student:
    """A log-mel student trained on ``store`` rows ``rows`` towards ``targets`` (one row of
    class probabilities per row); ``stream`` separates the batches of students of one seed."""
    rows = np.asarray(rows, dtype=np.int64)
    n_classes = len(store.labels)
    frames = store.index["frames"].to_numpy(np.int64)[rows]
    crop = resolve_crop_limits(cfg.train, dict(getattr(store, "meta", {}) or {}), frames)
    sched = cfg.distill.schedule
    n_mels = int(np.asarray(store.logmel(int(rows[0]))).shape[1])
    keras.utils.set_random_seed(cfg.distill.seed)
    model = build_network(student_config(cfg).model, n_classes, n_mels)
    phases = [p for p in stage_phases(sched) if p.max_epochs > 0]
    if not phases:
        raise ValueError("distill.schedule runs no epoch")
    compile_network(model, phases[0].lr, run_eagerly)
    ds = TrainBatches(store, rows, cfg.train, crop, sched.mixup_alpha, seed=cfg.distill.seed,
                      stream=stream, steps_per_epoch=cfg.train.steps_per_epoch,
                      n_classes=n_classes, targets=targets)
    first = np.concatenate([ds.batch(i, 0).x.ravel() for i in range(min(8, len(ds)))])
    set_input_statistics(model, logmel=(first.mean(), first.var()))
    epoch = 0
    for phase in phases:
        model.optimizer.learning_rate = phase.lr
        for phase_epoch in range(phase.max_epochs):
            losses, _ = run_epoch(model, ds, epoch, phase, phase_epoch, phase.lr)
            if not np.isfinite(losses[-1]):
                raise ValueError(f"the student's loss became {losses[-1]} in phase "
                                 f"{phase.name} epoch {phase_epoch}")
            epoch += 1
        log.info("student (stream %d) phase %s: %d epochs, loss %.4f", stream, phase.name,
                 phase.max_epochs, float(np.mean(losses)))
    return Student(model=model, crop=crop)


def student_tta(cfg: Config, crop: tuple[int, int]) -> tuple[list[int], int]:
    """The student's own TTA: (``distill.tta_n_lengths`` lengths spaced over its training
    crop limits ``crop``, ``distill.tta_crops``). What its honest score is taken with and what
    its served bundle carries, so the score measures what is served."""
    d = cfg.distill
    return spaced_lengths((), d.tta_n_lengths, int(crop[0]), int(crop[1])), int(d.tta_crops)


def teacher_tta(cfg: Config, crop: tuple[int, int]) -> tuple[list[int], int]:
    """The teacher's TTA (``ensemble.tta_*``) over the student's crop limits ``crop``."""
    return tta_lengths(cfg.ensemble, int(crop[0]), int(crop[1])), int(cfg.ensemble.tta_crops)


def predict_student(cfg: Config, student: Student, store: FeatureSource,
                    rows: np.ndarray, tta: tuple[list[int], int] | None = None) -> np.ndarray:
    """The student's probabilities for ``rows``, with ``tta`` (lengths, crops), by default
    its own (:func:`student_tta`)."""
    lengths, crops = tta or student_tta(cfg, student.crop)
    res = predict_ensemble([student.model], ClipRows(store.logmel, rows), [None], lengths,
                           crops=crops, seed=cfg.ensemble.seed,
                           batch_size=cfg.ensemble.batch_size)
    return res.probs()


def distill_out_of_fold(cfg: Config, store: FeatureSource, teachers: Mapping[int, np.ndarray],
                        run_eagerly: bool = False) -> StudentOOF:
    """The honest score: for each fold ``k`` of ``teachers``, a student trained on the other
    folds' clips and the unlabeled ones (:func:`fsd.distill.targets.unlabeled_rows`) towards
    ``teachers[k]`` (fold ``k``'s teacher's probabilities, one row per store row; only those
    rows are read) and scored on fold ``k``'s clips.

    Fold ``k``'s labels are read only to score its student (never to train or choose it).
    """
    t0 = time.perf_counter()
    index = store.index
    folds = index["fold"].to_numpy(np.int64)
    y = index["label_id"].to_numpy(np.int64)
    labels = list(store.labels)
    probs = np.zeros((len(index), len(labels)), dtype=np.float32)
    at_teacher_tta = np.zeros_like(probs)
    tta_differs = False
    scored = np.zeros(len(index), dtype=bool)
    extra = unlabeled_rows(y)
    for k in sorted(teachers):
        train_rows, held_out = fold_teacher_rows(folds, k)
        train_rows = np.concatenate([train_rows, extra])
        teacher = np.asarray(teachers[k])
        if teacher.shape != (len(index), len(labels)):
            raise ValueError(f"fold {k}'s teacher has shape {teacher.shape}, expected "
                             f"{(len(index), len(labels))}")
        targets = mix_targets(y[train_rows], teacher[train_rows], cfg.distill.hard_weight,
                              cfg.distill.temperature)
        student = train_student(cfg, store, train_rows, targets, stream=k + 1,
                                run_eagerly=run_eagerly)
        probs[held_out] = predict_student(cfg, student, store, held_out)
        tta = teacher_tta(cfg, student.crop)
        if tta == student_tta(cfg, student.crop):
            at_teacher_tta[held_out] = probs[held_out]
        else:
            tta_differs = True
            at_teacher_tta[held_out] = predict_student(cfg, student, store, held_out, tta)
        scored[held_out] = True
        keras.backend.clear_session()
    rows = np.flatnonzero(scored)
    names = index["fname"].astype(str).to_numpy()[rows].tolist()
    scores = score_oof(names, y[rows], folds[rows], probs[rows], labels, k=3)
    log.info("student out of fold: MAP@3 %.4f over %d folds", scores.overall, len(teachers))
    wide = score_oof(names, y[rows], folds[rows], at_teacher_tta[rows], labels, k=3) \
        if tta_differs else None
    if wide is not None:
        log.info("the same students with the teacher's TTA: MAP@3 %.4f", wide.overall)
    return StudentOOF(probs=probs[rows], rows=rows, scores=scores,
                      seconds=time.perf_counter() - t0, at_teacher_tta=wide)


def distill_served(cfg: Config, store: FeatureSource, teacher_oof: np.ndarray,
                   run_eagerly: bool = False) -> Student:
    """The student that is served: every labelled clip, its target from the whole ensemble's
    out-of-fold prediction (``teacher_oof``, one row per store row: the fold models that did
    not see the clip), and every unlabeled clip, its target the whole ensemble's."""
    index = store.index
    folds = index["fold"].to_numpy(np.int64)
    y = index["label_id"].to_numpy(np.int64)
    rows = np.concatenate([np.flatnonzero(folds >= 0), unlabeled_rows(y)])
    y = y[rows]
    targets = mix_targets(y, np.asarray(teacher_oof)[rows], cfg.distill.hard_weight,
                          cfg.distill.temperature)
    return train_student(cfg, store, rows, targets, stream=0, run_eagerly=run_eagerly)
