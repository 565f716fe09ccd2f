"""The distill stage without MLflow: the teachers' targets, the honest score, the served
student and its bundle.

- :func:`fold_teachers`: for each fold ``k``, the teacher the honest fold-``k`` student learns
  from: the fold-``k`` CNN (with TTA) and the fold-``k`` baseline (refitted on the other folds'
  clips: the one and the weight the nested blend chose for fold ``k`` on the other folds),
  neither of which saw fold ``k``, on the other folds' clips;
- :func:`served_teacher`: the whole ensemble's out-of-fold predictions (the served blend of
  the CNN's and its baseline's), what the served student learns from on every clip;
- :func:`run_distill`: both students, the honest score, and the served student as a bundle of
  one log-mel network (``summary.enabled`` off in its config), so that every way the ensemble
  is served (``fsd serve``, ``mlflow models serve``, ``fsd predict``, ``fsd export``) serves
  it, without computing the summary features.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fsd.config import Config
from fsd.distill.student import (
    StudentOOF,
    distill_out_of_fold,
    distill_served,
    student_config,
    student_tta,
)
from fsd.distill.targets import fold_teacher_rows, unlabeled_rows
from fsd.ensemble.bundle import BundleInfo, Ensemble, FoldFiles, build_bundle
from fsd.evaluation.blend import align_probabilities, blend
from fsd.model.tta import ClipRows, predict_ensemble

log = logging.getLogger(__name__)


@dataclass
class DistillResult:
    """The served student's bundle and the honest score."""

    bundle: Path
    info: BundleInfo
    oof: StudentOOF
    params: int
    seconds: float
    unlabeled: int = 0  # unlabeled clips the students trained on (distill.unlabeled)


def fold_teachers(ensemble: Ensemble, store, choices: pd.DataFrame) -> dict[int, np.ndarray]:
    """Per fold ``k`` of the ensemble: its teacher's probabilities for every store row (zeros
    on fold ``k``'s own rows, which its student never reads; the unlabeled rows of a
    :class:`fsd.distill.pool.StudentPool` scored too). ``choices``: the nested blend's rows
    (fold, baseline, weight); a fold without one, or weight 1, is the CNN alone. The fold's
    baseline is fitted on the other folds' labelled rows only."""
    from fsd.baseline.model import BaselineModel

    index = store.index
    folds = index["fold"].to_numpy(np.int64)
    y = index["label_id"].to_numpy(np.int64)
    labels = list(store.labels)
    summary = np.asarray(store.summary) if ensemble.cfg.summary.enabled else None
    pcas = ensemble.pca_inputs(summary)
    by_fold = {int(r.fold): r for r in choices.itertuples()} if len(choices) else {}
    out = {}
    extra = unlabeled_rows(y)
    for i, k in enumerate(ensemble.folds):
        fit_rows, _ = fold_teacher_rows(folds, k)
        rows = np.concatenate([fit_rows, extra])
        pca = None if pcas[i] is None else pcas[i][rows]
        cnn = predict_ensemble([ensemble.models[i]], ClipRows(store.logmel, rows), [pca],
                               ensemble.info.tta_lengths, crops=ensemble.info.tta_crops,
                               seed=ensemble.info.seed,
                               batch_size=ensemble.info.batch_size).probs()
        probs = cnn
        choice = by_fold.get(k)
        if choice is not None and str(choice.baseline) and float(choice.weight) < 1.0:
            base = BaselineModel.fit_new(str(choice.baseline), ensemble.cfg.baseline,
                                         summary[fit_rows], y[fit_rows], len(labels), labels)
            probs = blend(cnn, base.predict_proba(summary[rows]), float(choice.weight))
        teacher = np.zeros((len(index), len(labels)), dtype=np.float32)
        teacher[rows] = probs
        out[k] = teacher
    return out


def served_teacher(store, cnn_oof: pd.DataFrame, baseline_oof: pd.DataFrame | None,
                   weight: float, unlabeled: np.ndarray | None = None) -> np.ndarray:
    """The served blend's out-of-fold probabilities, one row per store row: ``weight`` x the
    CNN's (``oof/oof_cnn_probabilities.csv``) + the rest x its baseline's, aligned by name (a
    clip the CNN did not score: uniform, a clip the baseline did not: the CNN's). The
    unlabeled rows get ``unlabeled`` (:func:`ensemble_teacher`), one row each, in order."""
    names = store.index["fname"].astype(str).tolist()
    labels = list(store.labels)
    cnn, found = align_probabilities(cnn_oof, names, labels)
    cnn[~found] = 1.0 / len(labels)
    out = cnn
    if baseline_oof is not None and weight < 1.0:
        base, has = align_probabilities(baseline_oof, names, labels)
        base[~has] = cnn[~has]
        out = blend(cnn, base, weight)
    extra = unlabeled_rows(store.index["label_id"].to_numpy(np.int64))
    if len(extra):
        if unlabeled is None or len(unlabeled) != len(extra):
            raise ValueError(f"{len(extra)} unlabeled clips need the ensemble's probabilities")
        out[extra] = unlabeled
    return out


def ensemble_teacher(ensemble: Ensemble, store, test_probs: pd.DataFrame | None) -> np.ndarray:
    """The whole ensemble's probabilities for the unlabeled rows of ``store`` (a
    :class:`fsd.distill.pool.StudentPool`): read from ``test_probs`` (the ensemble run's
    ``test/test_probabilities.csv``, by name) where it has them, else scored as the
    ensemble scores its test split (every fold with TTA, then the blend)."""
    extra = unlabeled_rows(store.index["label_id"].to_numpy(np.int64))
    labels = list(store.labels)
    if not len(extra):
        return np.zeros((0, len(labels)), dtype=np.float32)
    names = store.index["fname"].astype(str).to_numpy()[extra].tolist()
    if test_probs is not None and len(test_probs):
        probs, found = align_probabilities(test_probs, names, labels)
    else:
        probs, found = np.zeros((len(extra), len(labels)), np.float32), np.zeros(len(extra), bool)
    todo = extra[~found]
    if len(todo):
        summary = np.asarray(store.summary)[todo] if ensemble.cfg.summary.enabled else None
        probs[~found] = ensemble.predict(ClipRows(store.logmel, todo), summary)
    return probs


def run_distill(cfg: Config, store, teacher: Ensemble, fold_targets: dict[int, np.ndarray],
                served_targets: np.ndarray, out: Path, run_eagerly: bool = False,
                ) -> DistillResult:
    """The honest students (one per fold of ``fold_targets``), then the served one on every
    clip, bundled under ``out/bundle``. ``cfg`` supplies the ``distill`` section (the
    student's network, schedule and TTA); the features and training settings are the
    teacher's (its bundle's config)."""
    t0 = time.perf_counter()
    base_cfg = dataclasses.replace(teacher.cfg, distill=cfg.distill)
    oof = distill_out_of_fold(base_cfg, store, fold_targets, run_eagerly=run_eagerly)
    student = distill_served(base_cfg, store, served_targets, run_eagerly=run_eagerly)
    lengths, crops = student_tta(base_cfg, student.crop)  # as the honest score was taken
    serve_cfg = _served_config(base_cfg, lengths, crops)
    info = dataclasses.replace(teacher.info, tta_lengths=lengths, tta_crops=crops,
                               crop_min=int(student.crop[0]),
                               crop_max=int(student.crop[1]), baseline=None, blend_weight=1.0,
                               scores={"student_oof_map3": oof.scores.overall,
                                       "student_oof_accuracy": oof.scores.accuracy})
    with tempfile.TemporaryDirectory(prefix="student-") as tmp:
        model_path = Path(tmp) / "model.keras"
        student.model.save(model_path)
        files = [FoldFiles(fold=0, model=model_path, run_id="student")]
        bundle = build_bundle(out / "bundle", files, serve_cfg, info)
    return DistillResult(bundle=bundle, info=info, oof=oof,
                         params=int(student.model.count_params()),
                         seconds=time.perf_counter() - t0,
                         unlabeled=len(unlabeled_rows(store.index["label_id"].to_numpy())))


def _served_config(cfg: Config, lengths: list[int], crops: int) -> Config:
    """The served student's config: its network width, the summary features off (the request
    path computes log-mel only: no summary features, projector or baseline), and its own TTA
    in ``ensemble`` (what its bundle's info carries too)."""
    cfg = student_config(cfg)
    return dataclasses.replace(
        cfg, summary=dataclasses.replace(cfg.summary, enabled=False),
        ensemble=dataclasses.replace(cfg.ensemble, tta_lengths=list(lengths),
                                     tta_n_lengths=len(lengths), tta_crops=int(crops)))
