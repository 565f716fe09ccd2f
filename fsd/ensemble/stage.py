"""The ensemble stage without MLflow: bundle the folds, score out of fold, blend, score test.

The ``ensemble`` entry point selects the fold runs, downloads their files and the blend
candidates' out-of-fold probabilities, calls :func:`run_ensemble`, then logs what it returns
and registers the bundle (:mod:`fsd.serving.registry`). Each step here is a plain function of
plain inputs:

- :func:`assemble`: the crop limits training used, the TTA lengths, the bundle and its model;
- :func:`score_out_of_fold`: each train clip scored by the fold model that held it out;
- :func:`align_candidates`: each baseline's out-of-fold probabilities row by row with the CNN's;
- :func:`nested_blend`: the blend as a procedure, scored honestly: each fold's baseline and
  weight chosen on the *other* folds' out-of-fold predictions and applied to its own clips, so
  the headline ``oof_map3`` scores the whole procedure (choice included);
- :func:`choose_blend`: the baseline (and weight) that blends best with the CNN on every
  fold's predictions: what the served model uses; its score (in-sample: the choice saw the
  clips it is scored on) is kept apart as ``blend_insample_oof_map3``;
- :func:`apply_blend`: the winner attached to the bundle;
- :func:`score_test`: the test split's predictions, the submission and its scores.

Both scorings (out of fold and test) go through a :class:`~fsd.ensemble.shards.ShardMap`:
in this process by default, or, given ``scorer`` (e.g. ``fsd.cluster.scoring``'s Ray
actors), split into clip ranges scored elsewhere and gathered back in clip order.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fsd.config import Config
from fsd.ensemble.bundle import BundleInfo, Ensemble, FoldFiles, attach_baseline, build_bundle
from fsd.ensemble.shards import TRAIN, LocalShards, ScorerFactory, ShardMap, score_sharded
from fsd.ensemble.submission import (
    build_submission,
    class_prior,
    score_submission,
    validate_submission,
)
from fsd.evaluation.blend import (
    BlendChoice,
    RuleChoice,
    align_probabilities,
    blend,
    choose_rule,
)
from fsd.evaluation.metrics import reciprocal_ranks
from fsd.evaluation.oof import OOFScores, score_oof
from fsd.model.tta import tta_lengths
from fsd.train.folddir import FoldDir

log = logging.getLogger(__name__)


@dataclass
class FoldModel:
    """One fold's files as its run logged them (downloaded), and that run."""

    fold: int
    files: FoldDir
    run_id: str = ""


@dataclass
class BlendCandidate:
    """A finished baseline run the CNN may blend with: its out-of-fold probabilities (fname,
    label, one column per class) and a way to fetch its final model (None: not usable)."""

    name: str
    run_id: str
    oof_map3: float
    probabilities: pd.DataFrame
    fetch_model: Callable[[], Path | None]


@dataclass
class OutOfFold:
    """The CNN ensemble's out-of-fold predictions of the train clips it scored."""

    names: list[str]
    labels: list[str]
    y: np.ndarray
    folds: np.ndarray
    probs: np.ndarray
    scores: OOFScores
    seconds: float

    def probabilities_frame(self, probs: np.ndarray | None = None) -> pd.DataFrame:
        """fname, label, one column per class (a baseline's ``oof_probabilities.csv`` format;
        the folds are in ``oof_cnn.csv``): ``probs`` (default: the CNN's) row by row."""
        probs = self.probs if probs is None else probs
        frame = pd.DataFrame(np.asarray(probs, dtype=np.float32), columns=list(self.labels))
        frame.insert(0, "label", np.asarray(self.labels, dtype=object)[self.y])
        frame.insert(0, "fname", self.names)
        return frame


@dataclass
class Blend:
    """The chosen blend: ``weight * cnn + (1 - weight) * baseline`` and how it scored."""

    name: str
    run_id: str
    weight: float
    probs: np.ndarray
    oof_map3: float
    oof_accuracy: float
    baseline_oof_map3: float
    clips: int  # clips with baseline probabilities
    model: Path  # the baseline's final model, to bundle
    choice: BlendChoice
    candidates: pd.DataFrame  # every usable candidate's weight and blended score
    rule: str = "best"  # ensemble.blend_rule
    reason: str = ""  # why the rule chose this pair (one line)


@dataclass
class AlignedCandidate:
    """A usable candidate: its probabilities in the CNN's row order (the CNN's own where the
    baseline has no row) and which rows it had."""

    cand: BlendCandidate
    probs: np.ndarray
    found: np.ndarray


@dataclass
class NestedBlend:
    """The blend procedure scored out of fold: each fold's clips blended with the baseline and
    weight chosen on the other folds (``choices``: one row per fold)."""

    probs: np.ndarray
    choices: pd.DataFrame  # fold, baseline, run_id, weight, chosen_on_map3, held_out_map3


@dataclass
class TestScores:
    """The test split: probabilities, the complete submission, its scores where labelled."""

    submission: pd.DataFrame
    probabilities: pd.DataFrame | None = None  # fname + one column per class; None: no clips
    scores: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    prior_only: list[str] = field(default_factory=list)  # test clips without features

    @property
    def map3(self) -> dict[str, float]:
        """The MAP@3 scores (public, private) the bundle and the summary carry."""
        return {k: v for k, v in self.scores.items() if k.endswith("map3")}


@dataclass
class EnsembleResult:
    """What :func:`run_ensemble` made: the bundle (scores in its manifest) and each score."""

    bundle: Path
    info: BundleInfo
    lengths: list[int]
    cnn: OutOfFold
    oof: OOFScores  # the headline: the nested blend's where a blend was chosen, else the CNN's
    probs: np.ndarray  # the headline's out-of-fold probabilities
    folds_mean: dict[str, float]
    blend: Blend | None = None  # the in-sample choice: what the served model blends
    nested: NestedBlend | None = None
    test: TestScores | None = None
    # the best baseline alone on the same clips: the score @champion must not fall below
    best_baseline_oof_map3: float | None = None

    @property
    def blended(self) -> bool:
        return self.blend is not None and self.blend.weight < 1.0


def run_ensemble(cfg: Config, store, folds: Sequence[FoldModel],
                 candidates: Sequence[BlendCandidate], out: Path, train_key: str = "",
                 scorer: ScorerFactory | None = None) -> EnsembleResult:
    """The stage: ``cfg`` is the config the folds were trained with (with this run's ensemble
    and baseline settings), ``out`` the run's own folder (the bundle goes to ``out/bundle``).
    ``scorer`` makes the :class:`~fsd.ensemble.shards.ShardMap` the TTA scoring runs on from
    the bundle (default: this process, unsharded); it is closed before this returns."""
    info, lengths, ensemble, bundle = assemble(cfg, store, folds, out / "bundle", train_key)
    with_summary = cfg.summary.enabled
    shard_map = (scorer(bundle, ensemble) if scorer is not None
                 else LocalShards(ensemble, store, with_summary))
    with closing(shard_map):
        cnn = score_out_of_fold(ensemble, store, with_summary, shard_map)
        usable = align_candidates(cnn, candidates) if cfg.ensemble.blend else []
        steps, rule = cfg.ensemble.blend_steps, cfg.ensemble.blend_rule
        chosen = choose_blend(cnn, usable, steps, rule) if usable else None
        oof, probs, nested = cnn.scores, cnn.probs, None
        if chosen is not None:
            # the headline: the blend chosen fold by fold on the other folds (the choice's own
            # optimism removed); the served model uses the choice made on every fold (chosen)
            nested = nested_blend(cnn, usable, steps, rule)
            probs = nested.probs
            oof = score_oof(cnn.names, cnn.y, cnn.folds, probs, info.labels, k=3)
            if chosen.weight < 1.0:
                apply_blend(bundle, ensemble, info, chosen)
        info.scores = {"oof_map3": oof.overall, "oof_accuracy": oof.accuracy,
                       "cnn_oof_map3": cnn.scores.overall}
        floor = best_baseline_score(cnn, usable)
        if floor is not None:
            info.scores["best_baseline_oof_map3"] = floor
        if chosen is not None:
            info.scores.update({"blend_weight": chosen.weight,
                                "blend_insample_oof_map3": chosen.oof_map3})
        test = score_test(store, ensemble, info, with_summary, shard_map)
    if test is not None:
        info.scores.update(test.map3)
    write_scores(bundle, info.scores)
    return EnsembleResult(bundle=bundle, info=info, lengths=lengths, cnn=cnn, oof=oof,
                          probs=probs, folds_mean=folds_mean(folds), blend=chosen,
                          nested=nested, test=test, best_baseline_oof_map3=floor)


def best_baseline_score(cnn: OutOfFold, usable: Sequence[AlignedCandidate]) -> float | None:
    """The best candidate's MAP@3 alone on the clips it and the CNN both scored (same folds):
    None without candidates."""
    scores = [float(reciprocal_ranks(cnn.y[a.found], a.probs[a.found], 3).mean())
              for a in usable if a.found.any()]
    return max(scores) if scores else None


def assemble(cfg: Config, store, folds: Sequence[FoldModel], dst: Path, train_key: str = "",
             ) -> tuple[BundleInfo, list[int], Ensemble, Path]:
    """The bundle of ``folds`` with the TTA settings and the crop limits training used."""
    crop_min, crop_max = crop_limits(cfg, store, folds)
    lengths = tta_lengths(cfg.ensemble, crop_min, crop_max)
    e, index, labels = cfg.ensemble, store.index, list(store.labels)
    info = BundleInfo(
        labels=labels, tta_lengths=lengths, tta_crops=e.tta_crops, seed=e.seed, top_k=e.top_k,
        batch_size=e.batch_size, crop_min=crop_min, crop_max=crop_max,
        prior=class_prior(index["label_id"].to_numpy(), len(labels)).tolist(),
        max_request_clips=e.max_request_clips, max_clip_bytes=e.max_clip_bytes,
        max_request_frames=e.max_request_frames, train_key=train_key,
    )
    files = [FoldFiles(fold=f.fold, model=f.files.model,
                       projector=f.files.projector if f.files.projector.exists() else None,
                       run_id=f.run_id) for f in folds]
    bundle = build_bundle(dst, files, cfg, info)
    return info, lengths, Ensemble.load(bundle), bundle


def crop_limits(cfg: Config, store, folds: Sequence[FoldModel]) -> tuple[int, int]:
    """The crop limits training used (each fold records them), else as training derives them."""
    from fsd.train.batches import resolve_crop_limits

    found = set()
    for f in folds:
        try:
            data = f.files.read_result()
            found.add((int(data["crop_min"]), int(data["crop_max"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    if len(found) == 1:
        return found.pop()
    if len(found) > 1:
        log.warning("folds trained with different crop limits %s; using their hull", sorted(found))
        return min(lo for lo, _ in found), max(hi for _, hi in found)
    frames = store.index["frames"].to_numpy(np.int64)
    return resolve_crop_limits(cfg.train, dict(getattr(store, "meta", {}) or {}), frames)


def folds_mean(folds: Sequence[FoldModel]) -> dict[str, float]:
    """The mean of the folds' own validation scores (their result.json's ``val_map3`` and
    ``val_accuracy``: fixed lengths, centre crops, no TTA), as ``folds_mean/val_*``."""
    values: dict[str, list[float]] = {"val_map3": [], "val_accuracy": []}
    for f in folds:
        try:
            data = f.files.read_result()
        except (OSError, ValueError):
            continue
        for name in values:
            if isinstance(data.get(name), (int, float)):
                values[name].append(float(data[name]))
    return {f"folds_mean/{k}": float(np.mean(v)) for k, v in values.items() if v}


def score_out_of_fold(ensemble: Ensemble, store, with_summary: bool,
                      shard_map: ShardMap | None = None) -> OutOfFold:
    """Each train clip scored (with TTA) by the fold model that held it out; clips in no fold
    of the ensemble are left out. ``shard_map``: where (default: here, unsharded)."""
    t0 = time.perf_counter()
    index = store.index
    folds = index["fold"].to_numpy()
    members = [np.flatnonzero(folds == f) for f in ensemble.folds]
    shard_map = shard_map or LocalShards(ensemble, store, with_summary)
    res = score_sharded(shard_map, TRAIN, np.arange(len(index)), members)
    scored = res.count > 0
    if not scored.all():
        log.warning("%d train clips are in no fold of this ensemble; left out of the OOF score",
                    int((~scored).sum()))
    y = index["label_id"].to_numpy()[scored]
    names = index["fname"].astype(str)[scored].tolist()
    probs = res.probs()[scored]
    labels = list(store.labels)
    scores = score_oof(names, y, folds[scored], probs, labels, k=3)
    return OutOfFold(names=names, labels=labels, y=y, folds=folds[scored], probs=probs,
                     scores=scores, seconds=time.perf_counter() - t0)


def align_candidates(cnn: OutOfFold, candidates: Sequence[BlendCandidate],
                     ) -> list[AlignedCandidate]:
    """The candidates whose out-of-fold probabilities line up with the CNN's clips (best
    alone first, as given); a clip without a baseline row keeps the CNN's probabilities."""
    out = []
    for cand in candidates:
        try:
            base, found = align_probabilities(cand.probabilities, cnn.names, cnn.labels)
        except ValueError as exc:
            log.warning("ensemble.blend: baseline run %s is unusable (%s); skipped",
                        cand.run_id, exc)
            continue
        if not found.any():
            log.warning("ensemble.blend: baseline run %s scored none of these clips; skipped",
                        cand.run_id)
            continue
        if not found.all():
            log.warning("ensemble.blend: baseline run %s has no out-of-fold probabilities for %d "
                        "of %d clips; those keep the CNN's", cand.run_id, int((~found).sum()),
                        len(found))
        out.append(AlignedCandidate(cand=cand, probs=np.where(found[:, None], base, cnn.probs),
                                    found=found))
    return out


def _best_pair(cnn: OutOfFold, usable: Sequence[AlignedCandidate], rows: np.ndarray, steps: int,
               rule: str) -> tuple[AlignedCandidate, RuleChoice] | None:
    """On ``rows`` only: the (candidate, weight) ``rule`` picks (:func:`choose_rule`; ties:
    the earlier candidate, i.e. the better alone). None: no candidate."""
    if not usable or not rows.any():
        return None
    choice = choose_rule(cnn.y[rows], cnn.probs[rows], [a.probs[rows] for a in usable],
                         cnn.folds[rows], steps, rule=rule, k=3)
    return usable[choice.candidate], choice


def nested_blend(cnn: OutOfFold, usable: Sequence[AlignedCandidate], steps: int,
                 rule: str = "best") -> NestedBlend:
    """Each fold's clips blended with the (baseline, weight) ``rule`` chose on the other folds'
    out-of-fold predictions; a fold with no other fold to choose on keeps the CNN's."""
    probs = np.array(cnn.probs, dtype=np.float32, copy=True)
    rows = []
    for f in sorted(set(cnn.folds.tolist())):
        mine = cnn.folds == f
        best = _best_pair(cnn, usable, ~mine, steps, rule)
        if best is None:
            rows.append({"fold": int(f), "baseline": "", "run_id": "", "weight": 1.0,
                         "chosen_on_map3": float("nan"),
                         "held_out_map3": float(reciprocal_ranks(cnn.y[mine], cnn.probs[mine],
                                                                 3).mean()), "why": ""})
            continue
        a, choice = best
        probs[mine] = blend(cnn.probs[mine], a.probs[mine], choice.weight)
        rows.append({"fold": int(f), "baseline": a.cand.name, "run_id": a.cand.run_id,
                     "weight": choice.weight, "chosen_on_map3": choice.score,
                     "held_out_map3": float(reciprocal_ranks(cnn.y[mine], probs[mine],
                                                             3).mean()),
                     "why": choice.reason})
    return NestedBlend(probs=probs, choices=pd.DataFrame(rows))


def choose_blend(cnn: OutOfFold, usable: Sequence[AlignedCandidate], steps: int,
                 rule: str = "best") -> Blend | None:
    """Blend the CNN's out-of-fold probabilities with the (baseline, weight) ``rule`` picks
    on every clip: the choice the served model uses.

    Each candidate (best alone first) gets its weight chosen out of fold (the table
    ``candidates``); ``rule`` (:func:`~fsd.evaluation.blend.choose_rule`) then picks the pair.
    Its score saw the choice made on the same clips (``blend_insample_oof_map3``);
    :func:`nested_blend` gives the honest one. None when no candidate is usable (or the
    winner's model cannot be fetched).
    """
    rows = []
    everything = np.ones(len(cnn.y), dtype=bool)
    for a in usable:
        _, choice = _best_pair(cnn, [a], everything, steps, "best")
        rows.append({"baseline": a.cand.name, "run_id": a.cand.run_id,
                     "baseline_oof_map3": a.cand.oof_map3, "weight": choice.weight,
                     "blend_insample_oof_map3": choice.score,
                     "blend_insample_oof_accuracy": choice.accuracy})
    best = _best_pair(cnn, usable, everything, steps, rule)
    if best is None:
        return None
    a, choice = best
    cand = a.cand
    model = cand.fetch_model()
    if model is None:
        return None
    probs = blend(cnn.probs, a.probs, choice.weight)
    log.info("ensemble.blend (rule %s): %s (run %s) at w=%.2f: out-of-fold MAP@3 %.4f in "
             "sample (CNN alone %.4f; %d candidates): %s", rule, cand.name, cand.run_id,
             choice.weight, choice.score, float(reciprocal_ranks(cnn.y, cnn.probs, 3).mean()),
             len(rows), choice.reason)
    return Blend(name=cand.name, run_id=cand.run_id, weight=choice.weight, probs=probs,
                 oof_map3=choice.score, oof_accuracy=choice.accuracy,
                 baseline_oof_map3=cand.oof_map3, clips=int(a.found.sum()), model=model,
                 choice=choice.grid, candidates=pd.DataFrame(rows), rule=rule,
                 reason=choice.reason)


def apply_blend(bundle: Path, ensemble: Ensemble, info: BundleInfo, chosen: Blend) -> None:
    """Attach the chosen baseline to the bundle; ``ensemble`` (test clips) and ``info``
    (serving) then predict the blend."""
    attach_baseline(bundle, chosen.model, chosen.weight, name=chosen.name, run_id=chosen.run_id)
    ensemble.reload_baseline(bundle)
    info.baseline, info.blend_weight = ensemble.info.baseline, ensemble.info.blend_weight


def score_test(store, ensemble: Ensemble, info: BundleInfo, with_summary: bool,
               shard_map: ShardMap | None = None) -> TestScores | None:
    """Predict the store's test split, build the submission, score it where labelled (None:
    the dataset has no test split).

    The test index lists every test clip of the dataset, the undecodable ones too (``ok``
    false, 0 frames): those get the training prior's top 3, so the submission is complete.
    """
    if "test" not in getattr(store, "splits", []):
        log.info("no test split in this dataset: no submission")
        return None
    test = store.open_split("test")
    tindex = test.index
    ok = tindex["ok"].astype(bool).to_numpy() if "ok" in tindex else np.ones(len(tindex), bool)
    ok = ok & (tindex["frames"].to_numpy() > 0)
    rows = np.flatnonzero(ok)
    names = tindex["fname"].astype(str).to_numpy()[rows].tolist()
    probs = np.zeros((0, len(info.labels)), dtype=np.float32)
    out = TestScores(submission=pd.DataFrame())
    if len(rows):
        t0 = time.perf_counter()
        # the CNN's views where shard_map runs them; the baseline (cheap) blended here, as
        # Ensemble.predict blends
        shard_map = shard_map or LocalShards(ensemble, store, with_summary)
        probs = score_sharded(shard_map, "test", rows).probs()
        if ensemble.baseline is not None:
            probs = ensemble.blend(probs, np.asarray(test.summary)[rows] if with_summary
                                   else None)
        out.seconds = time.perf_counter() - t0
        out.probabilities = pd.DataFrame(probs, columns=info.labels)
        out.probabilities.insert(0, "fname", names)
    expected = tindex["fname"].astype(str).tolist()
    out.submission = build_submission(expected, names, probs, info.labels, np.asarray(info.prior),
                                      k=3)
    validate_submission(out.submission, expected, info.labels, k=3)
    out.prior_only = tindex.loc[~ok, "fname"].astype(str).tolist()
    if out.prior_only:
        log.warning("%d test clips have no features (%s); they get the training prior's top 3",
                    len(out.prior_only), ", ".join(out.prior_only[:5]))
    out.scores = score_submission(out.submission, tindex)
    if out.scores:
        log.info("test MAP@3: %s", ", ".join(f"{k} {v:.4f}" for k, v in out.scores.items()
                                             if k.endswith("map3")))
    return out


def write_scores(bundle: Path, scores: dict[str, float]) -> None:
    """Record ``scores`` in the bundle's manifest (the served model reports them)."""
    manifest = bundle / "ensemble.json"
    data = json.loads(manifest.read_text())
    data["scores"] = {k: float(v) for k, v in scores.items()}
    manifest.write_text(json.dumps(data, indent=2))
