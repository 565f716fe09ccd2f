"""Combine the fold models of one training into a TTA ensemble, score it, register it.

Finds the fold runs of one training (same training key; or exactly the runs given with
--fold-runs) and refuses an incomplete or mixed set. Downloads each fold's model and scaler+PCA,
scores every train clip out of fold with the recipe's test-time augmentation (folds x lengths x
random crops, geometric mean). Where the dataset has test clips it writes a Kaggle submission
(every test clip, three labels; a clip without features gets the training prior's top 3) and
scores it where test labels exist (public/private MAP@3). Logs the whole ensemble as an MLflow
pyfunc from code (raw audio in) and registers it; the alias (e.g. ``champion``) moves only when
the out-of-fold MAP@3 beats the holder's and is no worse than the best baseline's out of fold on
the same folds (``best_baseline_oof_map3``), and the comparison is recorded in the run.

With ``ensemble.blend`` and finished baseline runs on the same feature store (``fsd
baseline``), one baseline is blended in: ``p = w * cnn + (1 - w) * baseline``, ``w`` one of
``ensemble.blend_steps + 1`` values in [0, 1] (ties: the larger ``w``), the baseline the one
whose blend scores best, as ``ensemble.blend_rule`` decides (``best``, the default: the highest
pooled score; ``majority``: the best single model unless the best blend beats it on most
folds; ``shrink``: that weight halfway to 0.5). What each figure measures:

- ``oof_map3`` / ``oof_accuracy``, the headline (what the alias, e.g. ``champion``, is decided
  on): the blend as a procedure, scored out of fold with the choice nested: each fold's clips
  are blended with the baseline and weight chosen on the *other* folds' out-of-fold
  predictions (``blend/nested_choices.csv``). Without a blend: the CNN's.
- ``cnn_oof_map3`` / ``cnn_oof_accuracy``: the CNN fold ensemble alone (with TTA).
- per fold, both, in one table: ``oof/per_fold.csv``; the folds' own validation (no TTA) as
  the params ``folds_mean.val_map3`` / ``folds_mean.val_accuracy``; timings as ``perf.*`` params.
- ``blend_insample_oof_map3`` / ``..._accuracy``: the blend the served model uses, chosen on
  every fold's predictions and scored on the same ones (optimistic: the choice saw the clips);
  ``blend_weight`` its weight, ``blend/blend_candidates.csv`` every candidate's.
- per class: ``oof/oof_per_class.csv`` (CNN and blend side by side) and the plots under
  ``plots/cnn/`` and ``plots/blend/``.

The ensemble's LoggedModel carries the params that made it (folds, TTA, the blend) and the
headline metrics, linked to it and to the clip table; a weight of 1 blends nothing (the bundle
stays CNN-only).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from fsd import tracking
from fsd.config import Config
from fsd.entrypoints.flags import parse_flag
from fsd.train.experimentdir import ExperimentDir

if TYPE_CHECKING:  # the stage loads TensorFlow, mlflow the tracking: imported where they run
    from mlflow.entities import Run

    from fsd.ensemble.stage import BlendCandidate, EnsembleResult, FoldModel, TestScores

HELP = "TTA ensemble of a training's folds: out-of-fold MAP@3, submission, registered pyfunc"
log = logging.getLogger(__name__)

# the ensemble LoggedModel's metrics (the run's too); every other figure is the run's only
MODEL_METRICS = ("oof_map3", "oof_accuracy", "cnn_oof_map3", "cnn_oof_accuracy")
# The run's metrics, each a chart on its metrics tab: the 4 above, the blend's 3
# (blend_weight, blend_insample_oof_*) and, where the test clips are labelled, their MAP@3
# (test_map3, public_map3, private_map3). Nothing else becomes a metric.
MAX_RUN_METRICS = 10

__all__ = ["build_ensemble", "ensemble_logged", "logged_model_name", "select_fold_runs"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fold-runs", default="",
                   help="comma-separated fold run ids (default: the newest finished run of each "
                        "fold with this config's training key)")
    p.add_argument("--register", nargs="?", const="true", default="true", type=parse_flag,
                   help="register the model under ensemble.model_name and move ensemble.alias "
                        "when it beats the holder (default: %(default)s)")


def run(cfg: Config, args: argparse.Namespace) -> int:
    ids = [r.strip() for r in (args.fold_runs or "").split(",") if r.strip()]
    result = build_ensemble(cfg, ids or None, register=args.register)
    log.info("ensemble run %s: out-of-fold MAP@3 %.4f%s", result["run_id"], result["oof_map3"],
             f"; {result['promotion']['reason']}" if result.get("promotion") else "")
    return 0


def select_fold_runs(cfg: Config, run_ids: list[str] | None) -> dict[int, Run]:
    """The fold runs to combine (:func:`fsd.tracking.lookups.select_fold_runs`)."""
    from fsd.tracking.lookups import select_fold_runs as select

    return select(cfg, run_ids)


def ensemble_logged(cfg: Config, run_ids: list[str] | None = None, *, register: bool = True,
                    nested: bool = False) -> str:
    """The ensemble stage in its own (optionally nested) run; returns that run's id."""
    return build_ensemble(cfg, run_ids, register=register, nested=nested)["run_id"]


def build_ensemble(cfg: Config, run_ids: list[str] | None = None, *, register: bool = True,
                   nested: bool = False) -> dict:
    """Resolve the fold runs, their features and the blend candidates, run the stage
    (:func:`fsd.ensemble.stage.run_ensemble`) in a run and log it; returns a summary dict
    (run_id, oof_map3, model_uri, promotion...)."""
    from fsd.ensemble.stage import run_ensemble
    from fsd.tracking import datasets
    from fsd.tracking.lookups import training_config

    runs = select_fold_runs(cfg, run_ids)
    first = next(iter(runs.values()))
    train_cfg = training_config(cfg, first)
    key = first.data.tags.get(tracking.TAG_TRAIN_KEY, "")
    store, features_run = tracking.resolve_store(
        train_cfg, first.data.tags.get(tracking.TAG_FEATURES_RUN, ""))
    work = ExperimentDir.of(cfg).ensemble(key)
    downloads = work / "downloads"
    tags = {tracking.TAG_TRAIN_KEY: key, tracking.TAG_FEATURES_RUN: features_run,
            tracking.TAG_FEATURE_KEY: tracking.feature_key(train_cfg),
            tracking.TAG_FOLD_RUNS: ",".join(r.info.run_id for r in runs.values())}
    with tracking.stage_run(train_cfg, "ensemble", tags=tags, nested=nested) as active:
        clips = datasets.store_dataset(train_cfg, store.index, tracking.feature_key(train_cfg))
        datasets.log_dataset(clips, datasets.TRAINING)
        folds = _download_folds(runs, downloads)
        candidates = _candidates(train_cfg, store.key, downloads) if cfg.ensemble.blend else []
        # outputs per run: two ensemble runs of one training never share a folder
        out = work / active.info.run_id
        result = run_ensemble(train_cfg, store, folds, candidates, out, train_key=key,
                              scorer=_scorer(cfg, train_cfg, features_run))
        summary = _summary(result, active.info.run_id, key)
        # the model first: metrics logged before it would be copied onto it
        model_info = _log_model(cfg, train_cfg, result, summary, runs, clips.name)
        summary["model_uri"] = model_info.model_uri
        _log_result(result, out, len(folds), cfg.ensemble.tta_crops, model_info.model_id, clips)
        summary.update(_register(cfg, train_cfg, result, summary, runs, active.info.run_id,
                                 register))
        tracking.describe(tracking.ensemble_description(train_cfg, summary, runs, result.lengths,
                                       cfg.ensemble.tta_crops))
    return summary


def _scorer(cfg: Config, train_cfg: Config, features_run: str):
    """Where the TTA scoring runs: Ray actors under ``cluster.executor: ray`` (each loads the
    bundle from Ray's object store and the features from the artifact store), else here
    (also under Ray with ``cluster.scoring_actors: 0``)."""
    if cfg.cluster.executor != "ray" or cfg.cluster.scoring_actors == 0:
        return None
    from fsd.cluster.scoring import ray_scorer

    return ray_scorer(cfg, train_cfg, features_run)


def _download_folds(runs: dict[int, Run], downloads: Path) -> list[FoldModel]:
    from fsd.ensemble.stage import FoldModel
    from fsd.tracking.artifacts import FOLD_ARTIFACT
    from fsd.train.folddir import FoldDir

    return [FoldModel(fold=fold, run_id=r.info.run_id, files=FoldDir(tracking.download_artifacts(
                r.info.run_id, FOLD_ARTIFACT, downloads / r.info.run_id)))
            for fold, r in runs.items()]


def _candidates(cfg: Config, store_key: str, downloads: Path) -> list[BlendCandidate]:
    """The blend candidates (:func:`~fsd.tracking.lookups.blend_candidates`) whose out-of-fold
    probabilities can be read; the final model is fetched only for the winner."""
    from mlflow.exceptions import MlflowException

    from fsd.ensemble.stage import BlendCandidate
    from fsd.tracking.artifacts import load_oof_probabilities
    from fsd.tracking.lookups import blend_candidates

    runs = blend_candidates(cfg, store_key)
    if not runs:
        log.info("ensemble.blend: no finished baseline run on this feature store (store key %s); "
                 "the ensemble is the CNN alone (run `fsd baseline` to blend)", store_key[:8])
    out = []
    for run in runs:
        rid = run.info.run_id
        try:
            frame = load_oof_probabilities(rid, downloads / rid)
        except (OSError, ValueError, MlflowException) as exc:
            log.warning("ensemble.blend: baseline run %s is unusable (%s); skipped", rid, exc)
            continue
        out.append(BlendCandidate(
            name=run.data.tags.get(tracking.TAG_BASELINE, "baseline"), run_id=rid,
            oof_map3=run.data.metrics["oof_map3"], probabilities=frame,
            fetch_model=lambda rid=rid: _fetch_baseline_model(rid, downloads / rid)))
    return out


def _fetch_baseline_model(run_id: str, dst: Path) -> Path | None:
    from mlflow.exceptions import MlflowException

    from fsd.tracking.artifacts import download_baseline_model

    try:
        return download_baseline_model(run_id, dst)
    except (OSError, MlflowException) as exc:
        log.warning("ensemble.blend: baseline run %s has no usable model (%s); no blend",
                    run_id, exc)
        return None


def _log_result(result: EnsembleResult, out: Path, n_folds: int, crops: int, model_id: str,
                clips) -> None:
    """The stage's scores, tables and plots on the active run: the headline and the CNN's
    overall figures linked to the ensemble's LoggedModel and the clip table; the blend's
    in-sample figures the run's only (see the module docstring for what each measures).

    A metric is a chart on the run's metrics tab: only figures that compare runs are metrics
    (at most :data:`MAX_RUN_METRICS`); per-fold figures are one table
    (``oof/per_fold.csv``), timings and the folds' own mean validation params."""
    import mlflow

    from fsd.evaluation.plots import plot_oof
    from fsd.tracking import models
    from fsd.tracking.artifacts import (
        BLEND_OOF_PROBS,
        CNN_OOF_PROBS,
        OOF_ARTIFACT,
        log_frame,
    )
    from fsd.tracking.rounding import figure_text

    cnn, chosen = result.cnn, result.blend
    mlflow.log_params({"ensemble.folds": n_folds, "ensemble.lengths_used": str(result.lengths),
                       "ensemble.views_per_clip": len(result.lengths) * crops,
                       "perf.oof_seconds": figure_text("seconds", cnn.seconds),
                       "perf.oof_clips_per_s": figure_text(
                           "clips_per_s", len(cnn.y) / max(cnn.seconds, 1e-9)),
                       **{k.replace("/", "."): figure_text(k, v)
                          for k, v in result.folds_mean.items()}})
    headline = {"oof_map3": result.oof.overall, "oof_accuracy": result.oof.accuracy,
                "cnn_oof_map3": cnn.scores.overall, "cnn_oof_accuracy": cnn.scores.accuracy}
    models.log_model_metrics(headline, model_id, clips)
    log_frame(per_fold_frame(result), out / "per_fold.csv", OOF_ARTIFACT)
    run_only: dict[str, float] = {}
    if result.nested is not None:
        log_frame(result.nested.choices, out / "nested_choices.csv", "blend")
    if chosen is not None:
        run_only.update({"blend_weight": chosen.weight,
                         "blend_insample_oof_map3": chosen.oof_map3})
        mlflow.log_params({"blend.clips": chosen.clips, "blend.rule": chosen.rule,
                           "blend.baseline_oof_map3": figure_text("map3",
                                                                  chosen.baseline_oof_map3),
                           "blend.insample_oof_accuracy": figure_text("accuracy",
                                                                      chosen.oof_accuracy)})
        mlflow.set_tags({tracking.TAG_BLEND_RUN: chosen.run_id,
                         tracking.TAG_BLEND_MODEL: chosen.name,
                         tracking.TAG_BLEND_REASON: chosen.reason[:5000]})
        log_frame(chosen.choice.table(), out / "blend_weights.csv", "blend")
        log_frame(chosen.candidates, out / "blend_candidates.csv", "blend")
    if result.best_baseline_oof_map3 is not None:
        # the floor the alias is held to: the best baseline alone on the same folds
        run_only["best_baseline_oof_map3"] = result.best_baseline_oof_map3
    tracking.log_run_metrics(run_only)
    mlflow.log_param("ensemble.blended", str(result.blended).lower())
    mlflow.set_tag(tracking.TAG_BLENDED, str(result.blended).lower())
    plots = plot_oof(cnn.scores, cnn.y, cnn.probs, cnn.labels, out / "plots" / "cnn",
                     what="CNN fold ensemble with TTA")
    tracking.log_files(plots, "plots/cnn")
    if result.nested is not None:
        plots = plot_oof(result.oof, cnn.y, result.probs, cnn.labels, out / "plots" / "blend",
                         what="blend, chosen on the other folds")
        tracking.log_files(plots, "plots/blend")
    log_frame(cnn.scores.frame, out / "oof_cnn.csv", OOF_ARTIFACT)
    # the probabilities themselves: what a blend rule is compared on offline
    # (benchmarks/blend_rule.py) and what a student learns from (fsd distill)
    log_frame(cnn.probabilities_frame(), out / CNN_OOF_PROBS, OOF_ARTIFACT)
    if result.nested is not None:
        log_frame(result.oof.frame, out / "oof_blend.csv", OOF_ARTIFACT)
        log_frame(cnn.probabilities_frame(result.probs), out / BLEND_OOF_PROBS, OOF_ARTIFACT)
    log_frame(per_class_frame(result), out / "oof_per_class.csv", OOF_ARTIFACT)
    if result.test is not None:
        _log_test(result.test, out)


def per_fold_frame(result: EnsembleResult):
    """Per fold: its clips, the CNN fold ensemble's MAP@3 and accuracy (with TTA) and, with
    a nested blend, the blend's (each fold's choice made on the other folds)."""
    from fsd.evaluation.oof import per_fold_table

    scored = {"cnn": result.cnn.scores}
    if result.nested is not None:
        scored["blend"] = result.oof
    return per_fold_table(scored)


def per_class_frame(result: EnsembleResult):
    """Per class: clips, the CNN fold ensemble's MAP@3 and (blended) the nested blend's."""
    import pandas as pd

    cnn = result.cnn.scores
    frame = pd.DataFrame({"label": list(cnn.per_class),
                          "clips": [cnn.class_counts[c] for c in cnn.per_class],
                          "cnn_map3": list(cnn.per_class.values())})
    if result.nested is not None:
        frame["blend_map3"] = [result.oof.per_class[c] for c in frame["label"]]
    return frame.sort_values("cnn_map3", kind="stable")


def _log_test(test: TestScores, out: Path) -> None:
    import mlflow

    from fsd.tracking.artifacts import log_frame
    from fsd.tracking.rounding import figure_text

    if test.probabilities is not None:
        mlflow.log_params({"test.clips_predicted": len(test.probabilities),
                           "perf.test_seconds": figure_text("seconds", test.seconds),
                           "perf.test_clips_per_s": figure_text(
                               "clips_per_s", len(test.probabilities) / max(test.seconds, 1e-9))})
        log_frame(test.probabilities, out / "test_probabilities.csv", "test")
    mlflow.log_param("test.clips_prior_only", len(test.prior_only))
    log_frame(test.submission, out / "submission.csv", "submission")
    scores = test.scores or {}
    # the labelled test clips' MAP@3 (all, public, private) are metrics, their counts params
    mlflow.log_params({f"test.{k}": int(v) for k, v in scores.items() if k.startswith("n_")})
    tracking.log_run_metrics({k: v for k, v in scores.items() if not k.startswith("n_")})


def _summary(result: EnsembleResult, run_id: str, key: str) -> dict:
    summary = {"run_id": run_id, "oof_map3": result.oof.overall,
               "oof_accuracy": result.oof.accuracy, "cnn_oof_map3": result.cnn.scores.overall,
               "cnn_oof_accuracy": result.cnn.scores.accuracy,
               "train_key": key, "blended": result.blended, "tta_lengths": result.lengths,
               "nested": result.nested is not None,
               **(result.test.map3 if result.test is not None else {})}
    if result.best_baseline_oof_map3 is not None:
        summary["best_baseline_oof_map3"] = result.best_baseline_oof_map3
    if result.blend is not None:
        summary.update({"blend_weight": result.blend.weight, "baseline_run": result.blend.run_id,
                        "blend_baseline": result.blend.name, "blend_rule": result.blend.rule,
                        "blend_insample_oof_map3": result.blend.oof_map3})
    return summary


def _log_model(cfg: Config, train_cfg: Config, result: EnsembleResult, summary: dict,
               runs: dict, dataset_name: str):
    """The bundle as the run's pyfunc LoggedModel (from code), with the params that made it
    and a description; returns the ModelInfo (``model_uri``, ``model_id``)."""
    import mlflow

    from fsd.serving.pyfunc import log_ensemble_model
    from fsd.tracking.descriptions import markdown_safe

    e = cfg.ensemble
    params = {"folds": ",".join(str(k) for k in runs), "train_key": summary["train_key"],
              "model.backbone": train_cfg.model.backbone, "model.width": train_cfg.model.width,
              "tta_lengths": ",".join(str(v) for v in result.lengths),
              "tta_crops": e.tta_crops, "blended": str(result.blended).lower(),
              "feature_key": tracking.feature_key(train_cfg)}
    if result.blended:
        params.update({"blend_baseline": result.blend.name,
                       "blend_weight": f"{result.blend.weight:g}"})
    model = mlflow.initialize_logged_model(
        name=logged_model_name(e.model_name), source_run_id=mlflow.active_run().info.run_id,
        params={k: str(v) for k, v in params.items()}, model_type="pyfunc",
        tags={tracking.TAG_NOTE: markdown_safe(tracking.ensemble_model_description(
            train_cfg, summary, runs, dataset_name))})
    info = log_ensemble_model(result.bundle, result.info, name=logged_model_name(e.model_name),
                              sample_rate=train_cfg.audio.sample_rate, model_id=model.model_id)
    mlflow.set_tag(tracking.TAG_MODEL_URI, info.model_uri)
    return info


def _register(cfg: Config, train_cfg: Config, result: EnsembleResult, summary: dict,
              runs: dict, run_id: str, register: bool) -> dict:
    """With ``register``: register the logged model and move the alias when its headline
    ``oof_map3`` beats the holder's; returns the summary's promotion."""
    if not register:
        return {}
    import mlflow

    from fsd.serving.registry import register_and_promote
    from fsd.tracking.rounding import figure_text

    e = cfg.ensemble
    promo = register_and_promote(summary["model_uri"], e.model_name, e.alias,
                                 result.oof.overall, run_id=run_id,
                                 train_key=summary["train_key"],
                                 floor=result.best_baseline_oof_map3)
    describe_registered(e.model_name, promo.version, train_cfg, summary, runs, run_id)
    mlflow.log_dict(promo.as_dict(), "registry/promotion.json")
    mlflow.set_tags({tracking.TAG_REGISTERED_VERSION: promo.version,
                     tracking.TAG_ALIAS_MOVED: str(promo.moved).lower(),
                     tracking.TAG_ALIAS_REASON: promo.reason})
    if promo.previous_score is not None:  # the holder's figure, not this run's: a param
        mlflow.log_param("registry.holder_oof_map3", figure_text("map3", promo.previous_score))
    return {"promotion": promo.as_dict()}


def logged_model_name(model_name: str) -> str:
    """The logged model's name (MLflow 3 LoggedModel; ``runs:/<run>/<name>``): the registered
    name's, as a logged-model name allows (letters, digits, - _ .)."""
    import re

    return re.sub(r"[^0-9A-Za-z_.-]", "_", f"{model_name}-tta-ensemble")


def describe_registered(name: str, version: str, cfg: Config, summary: dict, runs: dict,
                        run_id: str) -> None:
    """Descriptions of the registered model (what it is, how to call it) and of this version
    (data, folds, out-of-fold score, the config that made it). Each opens with a plain line
    (no Markdown): the registry's lists print a description's first line as it is."""
    from mlflow.tracking import MlflowClient

    from fsd.tracking.descriptions import markdown_safe

    client = MlflowClient()
    alias = cfg.ensemble.alias
    model_text = (
        f"Sound tagger trained by fsd (config {cfg.name}): raw audio in, the top-k labels "
        "out.\n\n"
        "Input: column `audio`, base64-encoded bytes of any format soundfile reads; output: the "
        "top-k labels with scores. An ensemble of the CNN fold models with test-time "
        "augmentation (blended with a summary-feature baseline where that scores better out of "
        "fold). Each version's description gives its data, folds and out-of-fold MAP@3; the "
        f"alias `{alias}` moves to a version only when its out-of-fold MAP@3 (the blend's choice "
        "made on the other folds) beats the holder's and is no worse than the best "
        "baseline's on the same folds.\n\n"
        f"Serve: `fsd serve --model \"models:/{name}@{alias}\"`")
    folds = ", ".join(str(k) for k in runs)
    first = (f"Out-of-fold MAP@3 {summary['oof_map3']:.4f}, accuracy "
             f"{summary['oof_accuracy']:.4f} ({'blend' if summary.get('blended') else 'CNN'} "
             f"ensemble of {len(runs)} folds, config {cfg.name}).")
    version_text = (
        f"{first}\n\n{tracking.ensemble_scores_line(summary)}; data: "
        f"{tracking.data_summary(cfg)}; {len(runs)} folds ({folds}) of training key "
        f"`{summary.get('train_key', '')}`; config `{cfg.name}` "
        f"(model {cfg.model.backbone}, width {cfg.model.width}; the full config is "
        f"`config.yaml` of ensemble run {run_id}); TTA lengths {summary.get('tta_lengths')} x "
        f"{cfg.ensemble.tta_crops} crops.")
    try:
        client.update_registered_model(name, description=markdown_safe(model_text))
        client.update_model_version(name, str(version), description=markdown_safe(version_text))
    except Exception as exc:  # a description is no reason to fail the step
        log.warning("could not describe registered model %s v%s: %s", name, version, exc)
